// The report's text: UTF-8 repair, escaping for Markdown and HTML, number formats and the table type
// both renderers share. What the tables hold is report_sections.cpp's business.
#include "harness/report_internal.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>

namespace colm {

using namespace report_detail;

namespace report_detail {

// ---- text helpers ------------------------------------------------------------------------------------

// Replaces every invalid UTF-8 sequence (a byte-level token may be half a character) with U+FFFD.
std::string sanitize_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) len = 1, cp = c;
    else if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid too.
    if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
               (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF))
      ok = false;
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

// Control characters other than newline and tab would make the XML-ish SVG invalid.
std::string strip_controls(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 && c != '\n' && c != '\t') out += "\xEF\xBF\xBD";
    else if (c == 0x7F) out += "\xEF\xBF\xBD";
    else out += ch;
  }
  return out;
}

// Plain text inside a Markdown table cell: no line breaks, no pipes, no inline markup.
std::string md_escape(const std::string& text) {
  std::string out;
  for (char ch : strip_controls(sanitize_utf8(text))) {
    if (ch == '\n' || ch == '\t') {
      out += ' ';
      continue;
    }
    if (std::string("\\|*_`<>~").find(ch) != std::string::npos) out += '\\';
    out += ch;
  }
  return out;
}


std::string printf_text(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}
std::string num(double v, int decimals) {
  if (!std::isfinite(v)) return "—";
  char format[16];
  std::snprintf(format, sizeof format, "%%.%df", decimals);
  return printf_text(format, v);
}
std::string short_num(double v) { return std::isfinite(v) ? printf_text("%.4g", v) : "—"; }
std::string p_value_text(double p) {
  if (!std::isfinite(p)) return "—";
  return p < 1e-4 ? printf_text("%.1e", p) : printf_text("%.4f", p);
}
std::string percent(int64_t part, int64_t whole) {
  return whole > 0 ? printf_text("%.1f%%", 100.0 * double(part) / double(whole)) : "—";
}
std::string with_ci(double v, double lo, double hi, int decimals) {
  if (!std::isfinite(v)) return "—";
  std::string s = num(v, decimals);
  if (std::isfinite(lo) && std::isfinite(hi)) s += " [" + num(lo, decimals) + ", " + num(hi, decimals) + "]";
  return s;
}
std::string metric_text(const ReportRun& r, const std::string& name) {
  const auto it = r.metrics.find(name);
  if (it == r.metrics.end()) return "—";
  const auto& m = it->second;
  return with_ci(m.value, m.ci_low.value_or(kNaN), m.ci_high.value_or(kNaN));
}
double metric_value(const ReportRun& r, const std::string& name) {
  const auto it = r.metrics.find(name);
  return it == r.metrics.end() ? kNaN : it->second.value;
}
std::string eta_text(const ReportRun& r) {
  if (!r.run.threshold) return "—";
  std::string notes;
  auto note = [&](const std::string& n) { notes += (notes.empty() ? "" : ", ") + n; };
  if (r.calibrated) note(r.target_rate ? "calibrated to rate " + short_num(*r.target_rate) : "calibrated");
  else if (r.target_rate) note("rate " + short_num(*r.target_rate));
  if (!r.calibration_edge.empty()) note("at the " + r.calibration_edge + " candidate tried");
  return short_num(*r.run.threshold) + (notes.empty() ? "" : " (" + notes + ")");
}
std::string base_text(const ReportRun& r) { return r.base.empty() ? "—" : r.base; }
std::string policy_text(const ReportRun& r) {
  return r.baseline ? r.run.policy + " — " + r.baseline_label : r.run.policy;
}

// ---- tables: one structure, rendered as Markdown or HTML ------------------------------------------------

std::string render_markdown(const Table& t) {
  if (t.rows.empty()) return "_(none)_\n";
  std::ostringstream os;
  os << "|";
  for (const auto& h : t.header) os << " " << md_escape(h) << " |";
  os << "\n|";
  for (size_t i = 0; i < t.header.size(); ++i) os << "---|";
  os << "\n";
  for (const auto& row : t.rows) {
    os << "|";
    for (const auto& c : row) os << " " << md_escape(c) << " |";
    os << "\n";
  }
  return os.str();
}

std::string render_html(const Table& t) {
  if (t.rows.empty()) return "<p class=\"none\">(none)</p>\n";
  std::ostringstream os;
  os << "<table" << (t.css_class.empty() ? "" : " class=\"" + html_escape(t.css_class) + "\"") << ">\n<thead><tr>";
  for (const auto& h : t.header) os << "<th>" << html_escape(h) << "</th>";
  os << "</tr></thead>\n<tbody>\n";
  for (const auto& row : t.rows) {
    os << "<tr>";
    for (const auto& c : row) os << "<td>" << html_escape(c) << "</td>";
    os << "</tr>\n";
  }
  os << "</tbody></table>\n";
  return os.str();
}

// Cuts text to at most max_bytes on a character boundary.
std::string truncate_utf8(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut) + "…";
}

}  // namespace report_detail

std::string html_escape(const std::string& text) {
  std::string out;
  for (char ch : strip_controls(sanitize_utf8(text))) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string visible_token(const std::string& text) {
  std::string out = "\"";
  char buf[8];
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      // The sequence the lead byte announces, when it is complete and valid.
      size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
      const std::string piece = len && i + len <= text.size() ? text.substr(i, len) : std::string();
      if (!piece.empty() && sanitize_utf8(piece) == piece) {
        out += piece;
        i += len;
      } else {
        std::snprintf(buf, sizeof buf, "\\x%02X", unsigned(c));
        out += buf;
        ++i;
      }
      continue;
    }
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7F) {
      std::snprintf(buf, sizeof buf, "\\x%02X", unsigned(c));
      out += buf;
    } else {
      out += char(c);
    }
    ++i;
  }
  return out + "\"";
}

bool is_result_digit(const std::string& text_before, const std::string& token) {
  if (!is_digit_token(token)) return false;
  // A token with a leading space starts a new number: only spaces may stand between it and '='.
  const bool starts_number = token[0] < '0' || token[0] > '9';  // non-empty: is_digit_token
  size_t i = text_before.size();
  if (!starts_number)
    while (i > 0 && text_before[i - 1] >= '0' && text_before[i - 1] <= '9') --i;
  while (i > 0 && (text_before[i - 1] == ' ' || text_before[i - 1] == '\t')) --i;
  return i > 0 && text_before[i - 1] == '=';
}

char result_operation(const std::string& text_before, const std::string& token) {
  if (!is_result_digit(text_before, token)) return '?';
  const bool starts_number = token[0] < '0' || token[0] > '9';
  size_t i = text_before.size();
  auto skip = [&](auto pred) {
    while (i > 0 && pred(text_before[i - 1])) --i;
  };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  auto space = [](char c) { return c == ' ' || c == '\t'; };
  if (!starts_number) skip(digit);
  skip(space);
  --i;  // the '=' (is_result_digit found it)
  skip(space);
  const size_t second_end = i;
  skip(digit);  // the second operand
  if (i == second_end) return '?';
  skip(space);
  if (i == 0) return '?';
  char op = text_before[i - 1];
  if (op == 'x') op = '*';
  if (i >= 2 && uint8_t(text_before[i - 2]) == 0xC3 && uint8_t(op) == 0x97) op = '*', --i;  // U+00D7
  if (op != '+' && op != '-' && op != '*' && op != '/') return '?';
  --i;
  skip(space);
  return i > 0 && digit(text_before[i - 1]) ? op : '?';
}

bool is_digit_token(const std::string& text) {
  bool any = false;
  for (char ch : text) {
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') continue;
    if (ch < '0' || ch > '9') return false;
    any = true;
  }
  return any;
}

std::vector<double> nice_ticks(double lo, double hi, int target_count) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (hi < lo) std::swap(lo, hi);
  if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
  const double rough = (hi - lo) / std::max(target_count, 1);
  const double p10 = std::pow(10.0, std::floor(std::log10(rough)));
  const double f = rough / p10;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p10;
  const double start = std::floor(lo / step + 1e-9), end = std::ceil(hi / step - 1e-9);
  std::vector<double> out;
  for (double i = start; i <= end + 0.5; i += 1) {
    double v = i * step;
    if (std::abs(v) < step * 1e-9) v = 0;  // no "-0"
    out.push_back(v);
  }
  return out;
}

}  // namespace colm
