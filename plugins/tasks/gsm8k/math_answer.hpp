// GSM8K-style answer handling shared by the gsm8k and arithmetic tasks (header-only): the final
// answer after "####" with numbers normalised, and the check of every "a op b = c" step in a text.
#pragma once
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace colm::math_answer {

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "1,080" -> "1080", "$18.00" -> "18", "+5" -> "5", "-0" -> "0", "007" -> "7", ".5" -> "0.5",
// "18." -> "18". Anything that is not a number after that is returned as it was cleaned.
inline std::string normalize_number(const std::string& text) {
  std::string s;
  for (char c : text)
    if (c != ',' && c != '$' && c != ' ') s += c;
  while (!s.empty() && s.back() == '.') s.pop_back();
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.erase(0, 1);
  }
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  size_t lead = 0;
  while (lead + 1 < s.size() && s[lead] == '0' && s[lead + 1] != '.') ++lead;
  s.erase(0, lead);
  if (!s.empty() && s[0] == '.') s = "0" + s;
  if (s.empty()) return s;
  if (s == "0") neg = false;
  return neg ? "-" + s : s;
}

// The number after the last "####" in text, normalised; "" when there is no "####" or no number
// follows it. (No fallback to "the last number in the text": an answer must be marked as one.)
inline std::string final_answer(const std::string& text) {
  const auto pos = text.rfind("####");
  if (pos == std::string::npos) return "";
  size_t i = pos + 4;
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
  std::string raw;
  while (i < text.size()) {
    const char c = text[i];
    if (is_digit(c) || c == '.' || c == '$' || ((c == '-' || c == '+') && raw.empty())) {
      raw += c;
    } else if (c == ',' && i + 1 < text.size() && is_digit(text[i + 1])) {
      raw += c;
    } else {
      break;
    }
    ++i;
  }
  bool digit = false;
  for (char c : raw) digit = digit || is_digit(c);
  return digit ? normalize_number(raw) : "";
}

// ---- calculation steps ---------------------------------------------------------------------------

struct Token {
  char kind;     // 'n' number, one of + - * / ( )
  double value;
};

namespace detail {

// Recursive descent over tokens [pos, end): expr = term (+|- term)*, term = factor (*|/ factor)*,
// factor = -factor | number | ( expr ).
struct Parser {
  const std::vector<Token>& t;
  size_t pos;
  int binary_ops = 0;
  bool ok = true;
  bool div_zero = false;

  double expr() {
    double v = term();
    while (ok && pos < t.size() && (t[pos].kind == '+' || t[pos].kind == '-')) {
      const char op = t[pos++].kind;
      ++binary_ops;
      const double r = term();
      v = op == '+' ? v + r : v - r;
    }
    return v;
  }
  double term() {
    double v = factor();
    while (ok && pos < t.size() && (t[pos].kind == '*' || t[pos].kind == '/')) {
      const char op = t[pos++].kind;
      ++binary_ops;
      const double r = factor();
      if (op == '/' && r == 0) div_zero = true;
      v = op == '*' ? v * r : (r == 0 ? 0 : v / r);
    }
    return v;
  }
  double factor() {
    if (pos >= t.size()) return ok = false, 0.0;
    const Token& k = t[pos];
    if (k.kind == '-') {
      ++pos;
      return -factor();
    }
    if (k.kind == 'n') return ++pos, k.value;
    if (k.kind == '(') {
      ++pos;
      const double v = expr();
      if (pos >= t.size() || t[pos].kind != ')') return ok = false, 0.0;
      ++pos;
      return v;
    }
    return ok = false, 0.0;
  }
};

// Reads a number at text[i]: digits, "," only as a thousands separator (followed by exactly three
// digits), one "." followed by digits. Returns the characters consumed (0: no number).
inline size_t read_number(const std::string& s, size_t i, std::string* out, int* decimals) {
  size_t j = i;
  std::string digits;
  int dec = 0;
  bool seen_dot = false;
  while (j < s.size()) {
    const char c = s[j];
    if (is_digit(c)) {
      digits += c;
      if (seen_dot) ++dec;
      ++j;
    } else if (c == ',' && !seen_dot && !digits.empty() && j + 3 < s.size() &&
               is_digit(s[j + 1]) && is_digit(s[j + 2]) && is_digit(s[j + 3]) &&
               (j + 4 >= s.size() || !is_digit(s[j + 4]))) {
      ++j;
    } else if (c == '.' && !seen_dot && !digits.empty() && j + 1 < s.size() && is_digit(s[j + 1])) {
      seen_dot = true;
      digits += c;
      ++j;
    } else {
      break;
    }
  }
  if (digits.empty()) return 0;
  if (out) *out = digits;
  if (decimals) *decimals = dec;
  return j - i;
}

// Tokens of an expression text; nullopt when it holds anything else.
inline std::optional<std::vector<Token>> tokenize(const std::string& s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ' ' || c == '$') {
      ++i;
    } else if (is_digit(c)) {
      std::string num;
      const size_t n = read_number(s, i, &num, nullptr);
      out.push_back({'n', std::stod(num)});
      i += n;
    } else if (c == '+' || c == '-' || c == '*' || c == '/' || c == '(' || c == ')') {
      out.push_back({c, 0});
      ++i;
    } else if (c == 'x' || c == 'X') {
      out.push_back({'*', 0});
      ++i;
    } else if ((unsigned char)c == 0xC3 && i + 1 < s.size() &&
               ((unsigned char)s[i + 1] == 0x97 || (unsigned char)s[i + 1] == 0xB7)) {  // × ÷
      out.push_back({(unsigned char)s[i + 1] == 0x97 ? '*' : '/', 0});
      i += 2;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

// Characters that may belong to the left-hand side of a step; 'x' only between digits/spaces.
inline bool expression_char(const std::string& s, size_t i) {
  const char c = s[i];
  if (is_digit(c) || c == ' ' || c == '.' || c == ',' || c == '+' || c == '-' || c == '*' || c == '/' ||
      c == '(' || c == ')' || c == '$')
    return true;
  if (c == 'x' || c == 'X') {
    const bool left = i > 0 && (is_digit(s[i - 1]) || s[i - 1] == ' ');
    const bool right = i + 1 < s.size() && (is_digit(s[i + 1]) || s[i + 1] == ' ');
    return left && right;
  }
  const unsigned char u = (unsigned char)c;
  if (u == 0x97 || u == 0xB7) return i > 0 && (unsigned char)s[i - 1] == 0xC3;
  if (u == 0xC3) return i + 1 < s.size() && ((unsigned char)s[i + 1] == 0x97 || (unsigned char)s[i + 1] == 0xB7);
  return false;
}

}  // namespace detail

struct CalcStep {
  std::string expression;  // left-hand side as written
  std::string result;      // right-hand side as written (thousands separators removed)
  double value = 0;        // the left-hand side evaluated
  bool correct = false;
};

// Every calculation step "A op B [op C ...] = R" in text, where the left side holds at least one
// binary operator (+ - * / x × ÷, parentheses allowed) between numbers and R is a number. Steps are
// found both inside GSM8K calculator annotations "<<48/2=24>>" and in plain text "48/2 = 24"; an
// "=" whose right side is an annotation ("48/2 = <<48/2=24>>24") is not counted twice. A step is
// correct when R equals the evaluated left side: exactly (1e-9 relative) when R is an integer, and
// within one unit of R's last decimal place when R has decimals (so 10/3 = 3.33 counts, rounded or
// truncated). Division by zero is an incorrect step.
inline std::vector<CalcStep> calculation_steps(const std::string& text) {
  std::vector<CalcStep> steps;
  for (size_t eq = text.find('='); eq != std::string::npos; eq = text.find('=', eq + 1)) {
    // Right side: optional spaces and '$', then a number (an annotation means "counted inside").
    size_t j = eq + 1;
    while (j < text.size() && (text[j] == ' ' || text[j] == '$')) ++j;
    if (text.compare(j, 2, "<<") == 0) continue;
    bool neg = false;
    if (j < text.size() && text[j] == '-') neg = true, ++j;
    std::string rnum;
    int decimals = 0;
    if (detail::read_number(text, j, &rnum, &decimals) == 0) continue;
    // Left side: the longest run of expression characters before '='.
    size_t b = eq;
    while (b > 0 && detail::expression_char(text, b - 1)) --b;
    std::string left = text.substr(b, eq - b);
    // Try ever shorter suffixes (at token boundaries) until one parses: "I bought 3, 4 + 5 = 9"
    // must yield "4 + 5". Leading junk (a stray comma, an operator) is dropped the same way.
    std::optional<CalcStep> found;
    for (size_t start = 0; start < left.size() && !found; ++start) {
      if (start > 0 && !(left[start - 1] == ' ' || left[start - 1] == ',' || left[start - 1] == '(' ||
                         left[start - 1] == ')' || left[start - 1] == '$'))
        continue;
      const std::string candidate = left.substr(start);
      auto toks = detail::tokenize(candidate);
      if (!toks || toks->empty()) continue;
      detail::Parser p{*toks, 0};
      const double v = p.expr();
      if (!p.ok || p.pos != toks->size() || p.binary_ops == 0) continue;
      CalcStep s;
      s.expression = candidate;
      const auto first = s.expression.find_first_not_of(' ');
      const auto last = s.expression.find_last_not_of(' ');
      s.expression = s.expression.substr(first, last - first + 1);
      s.result = (neg ? "-" : "") + rnum;
      s.value = v;
      const double r = std::stod(s.result);
      if (p.div_zero) s.correct = false;
      else if (decimals == 0) s.correct = std::fabs(v - r) <= 1e-9 * std::max(1.0, std::fabs(r));
      else s.correct = std::fabs(v - r) < std::pow(10.0, -decimals) + 1e-12;
      found = s;
    }
    if (found) steps.push_back(*found);
  }
  return steps;
}

}  // namespace colm::math_answer
