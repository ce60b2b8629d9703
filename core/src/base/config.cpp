// ConfigView over toml++: parsing with file:line:column errors, typed getters that record what was
// read and declared, --set overrides, unknown-key reporting and a canonical form for content hashes.
// What the keys mean is left to the code that reads them (experiment, plugins).
#include "colm/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <tuple>

namespace colm {

// The document and the tracking state every copy of every view of it shares: a plugin reading
// through a copy of a sub-view marks keys in the same sets that check_all_read() consults.
struct ConfigView::Impl {
  toml::table root;
  std::string source;
  std::set<std::string> read;          // dotted paths read (a read key marks its ancestors too)
  std::set<std::string> read_subtree;  // mark_read(): everything under these paths counts as read
  std::map<std::string, ConfigOption> declared;
  std::map<std::string, std::string> overridden;  // dotted path -> "--set a.b.c"
  std::recursive_mutex mutex;
};

namespace {

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  if (path.empty()) return parts;
  std::string::size_type start = 0;
  while (true) {
    const auto dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "." + b;
}

std::string parent_path(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? std::string() : path.substr(0, dot);
}

std::string last_component(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

const char* type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

// Shortest text that reads back as the same double (std::to_chars' guarantee), so that canonical
// forms and printed defaults do not depend on stream precision settings.
std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// A number in canonical form: integers and integral floats print the same way (`lr = 1` and
// `lr = 1.0` mean the same option value, so they must hash the same).
std::string canonical_number(double v) {
  if (std::isfinite(v) && std::floor(v) == v && std::fabs(v) < 9007199254740992.0)
    return std::to_string(static_cast<int64_t>(v));
  if (!std::isfinite(v)) return json_quote(format_double(v));
  return format_double(v);
}

void canonical_node(const toml::node& node, std::string& out) {
  switch (node.type()) {
    case toml::node_type::table: {
      // Sorted explicitly: the canonical form must not depend on the container's ordering.
      std::vector<std::pair<std::string, const toml::node*>> items;
      for (const auto& [k, v] : *node.as_table()) items.emplace_back(std::string(k.str()), &v);
      std::sort(items.begin(), items.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        out += json_quote(items[i].first);
        out += ':';
        canonical_node(*items[i].second, out);
      }
      out += '}';
      return;
    }
    case toml::node_type::array: {
      out += '[';
      const auto& arr = *node.as_array();
      for (size_t i = 0; i < arr.size(); ++i) {
        if (i) out += ',';
        canonical_node(arr[i], out);
      }
      out += ']';
      return;
    }
    case toml::node_type::string: out += json_quote(node.as_string()->get()); return;
    case toml::node_type::integer: out += std::to_string(node.as_integer()->get()); return;
    case toml::node_type::floating_point: out += canonical_number(node.as_floating_point()->get()); return;
    case toml::node_type::boolean: out += node.as_boolean()->get() ? "true" : "false"; return;
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time: {
      std::ostringstream os;
      if (auto d = node.as_date()) os << d->get();
      if (auto t = node.as_time()) os << t->get();
      if (auto dt = node.as_date_time()) os << dt->get();
      out += json_quote(os.str());
      return;
    }
    case toml::node_type::none: out += "null"; return;
  }
}

template <typename T>
std::string format_list(const std::vector<T>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ", ";
    if constexpr (std::is_same_v<T, std::string>) out += json_quote(values[i]);
    else if constexpr (std::is_same_v<T, double>) out += format_double(values[i]);
    else out += std::to_string(values[i]);
  }
  return out + "]";
}

// Optimal string alignment distance (Levenshtein plus adjacent transpositions): "seeed" and
// "sede" are both one or two typos away from "seed".
size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

bool valid_bare_key(const std::string& k) {
  if (k.empty()) return false;
  for (const char c : k) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string format_position(const toml::source_region& src, const std::string& fallback_file) {
  const std::string file = src.path && !src.path->empty() ? *src.path : fallback_file;
  return file + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column);
}

}  // namespace

// ---- internal helpers that need Impl ------------------------------------------------------------

namespace {

using Impl = ConfigView::Impl;

// The node at a dotted path, or nullptr when any part is absent or below a non-table.
toml::node* lookup(Impl& impl, const std::string& full) {
  toml::node* node = &impl.root;
  for (const auto& part : split_path(full)) {
    auto* tbl = node->as_table();
    if (!tbl) return nullptr;
    node = tbl->get(part);
    if (!node) return nullptr;
  }
  return node;
}

std::string location(Impl& impl, const std::string& full) {
  // Overridden keys (and anything inside an overridden inline table) come from the command line.
  for (std::string p = full;; p = parent_path(p)) {
    auto it = impl.overridden.find(p);
    if (it != impl.overridden.end()) return it->second;
    if (p.empty()) break;
  }
  for (std::string p = full;; p = parent_path(p)) {
    if (p.empty()) {
      const auto& src = impl.root.source();
      if (src.begin.line > 0) return format_position(src, impl.source);
      return impl.source;
    }
    toml::node* parent = lookup(impl, parent_path(p));
    if (parent && parent->is_table()) {
      auto* tbl = parent->as_table();
      auto it = tbl->find(last_component(p));
      if (it != tbl->end()) {
        // A [table] header points at its '['; any other key at the key itself.
        const auto& key_src = it->first.source();
        const auto& node_src = it->second.source();
        if (it->second.is_table() && node_src.begin.line > 0) return format_position(node_src, impl.source);
        if (key_src.begin.line > 0) return format_position(key_src, impl.source);
        if (node_src.begin.line > 0) return format_position(node_src, impl.source);
      }
    }
  }
}

// Like lookup(), but an intermediate part that exists and is not a table is a ConfigError: "a.b"
// cannot be read when "a" is a number.
toml::node* find_node(Impl& impl, const std::string& full) {
  toml::node* node = &impl.root;
  std::string walked;
  for (const auto& part : split_path(full)) {
    auto* tbl = node->as_table();
    if (!tbl) {
      throw ConfigError(location(impl, walked) + ": key '" + walked + "' must be a table, got " +
                        type_name(*node));
    }
    node = tbl->get(part);
    walked = join_path(walked, part);
    if (!node) return nullptr;
  }
  return node;
}

void mark_with_ancestors(Impl& impl, const std::string& full) {
  for (std::string p = full; !p.empty(); p = parent_path(p)) impl.read.insert(p);
}

bool subtree_read(const Impl& impl, const std::string& full) {
  if (impl.read_subtree.count("")) return true;
  for (std::string p = full; !p.empty(); p = parent_path(p))
    if (impl.read_subtree.count(p)) return true;
  return false;
}

[[noreturn]] void type_error(Impl& impl, const std::string& full, const std::string& expected,
                             const toml::node& got) {
  throw ConfigError(location(impl, full) + ": key '" + full + "' must be " + expected + ", got " +
                    type_name(got));
}

}  // namespace

// ---- construction ---------------------------------------------------------------------------------

ConfigView::ConfigView() : impl_(std::make_shared<Impl>()) { impl_->source = "<defaults>"; }
ConfigView::~ConfigView() = default;
ConfigView::ConfigView(const ConfigView&) = default;
ConfigView& ConfigView::operator=(const ConfigView&) = default;
ConfigView::ConfigView(std::shared_ptr<Impl> impl, std::string path)
    : impl_(std::move(impl)), path_(std::move(path)) {}

ConfigView ConfigView::from_string(const std::string& toml, const std::string& source_name) {
  auto impl = std::make_shared<Impl>();
  impl->source = source_name;
  try {
    impl->root = toml::parse(std::string_view(toml), std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    throw ConfigError(format_position(e.source(), source_name) + ": " + std::string(e.description()));
  }
  return ConfigView(std::move(impl), "");
}

ConfigView ConfigView::from_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw ConfigError("config file '" + path + "' is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot open config file '" + path + "': no such file or not readable");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) throw ConfigError("cannot read config file '" + path + "'");
  return from_string(buf.str(), path);
}

void ConfigView::apply_override(const std::string& assignment) {
  const auto eq = assignment.find('=');
  const std::string key = trim(eq == std::string::npos ? assignment : assignment.substr(0, eq));
  const auto parts = split_path(key);
  const bool keys_ok =
      !parts.empty() && std::all_of(parts.begin(), parts.end(), [](const auto& p) { return valid_bare_key(p); });
  if (eq == std::string::npos || !keys_ok) {
    throw ConfigError("--set '" + assignment +
                      "': expected KEY=VALUE with KEY a dotted path of letters, digits, '_' and '-' "
                      "(e.g. --set experiment.seed=3)");
  }
  const std::string value_text = trim(assignment.substr(eq + 1));
  const std::string full = join_path(path_, key);
  const std::string origin = "--set " + key;

  // The value is whatever TOML makes of it; anything that is not one TOML value is a string, so
  // `--set task.name=gsm8k` works without shell-escaped quotes.
  std::unique_ptr<toml::node> value;
  try {
    const std::string doc = "x = " + value_text + "\n";
    toml::table parsed = toml::parse(std::string_view(doc), std::string_view("--set"));
    if (parsed.size() == 1 && parsed.get("x")) value = std::make_unique<toml::table>(std::move(parsed));
  } catch (const toml::parse_error&) {
  }

  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  toml::table* tbl = &impl_->root;
  std::string walked;
  const auto full_parts = split_path(full);
  for (size_t i = 0; i + 1 < full_parts.size(); ++i) {
    walked = join_path(walked, full_parts[i]);
    toml::node* next = tbl->get(full_parts[i]);
    if (!next) {
      tbl->insert(full_parts[i], toml::table{});
      next = tbl->get(full_parts[i]);
      impl_->overridden.emplace(walked, origin);
    } else if (!next->is_table()) {
      throw ConfigError(origin + ": cannot set '" + full + "': '" + walked + "' is not a table (it is " +
                        type_name(*next) + ", at " + location(*impl_, walked) + ")");
    }
    tbl = next->as_table();
  }
  const std::string& last = full_parts.back();
  if (value) {
    auto* parsed = value->as_table();
    tbl->insert_or_assign(last, std::move(*parsed->get("x")));
  } else {
    tbl->insert_or_assign(last, value_text);
  }
  impl_->overridden[full] = origin;
}

// ---- getters --------------------------------------------------------------------------------------

namespace {

// Records the declaration, marks the key read and returns its node (nullptr when absent).
toml::node* declare(Impl& impl, const std::string& full, const std::string& type, const std::string& def,
                    const std::string& help, bool required) {
  ConfigOption opt;
  opt.key = full;
  opt.type = type;
  opt.default_value = def;
  opt.help = help;
  opt.required = required;
  impl.declared[full] = std::move(opt);
  mark_with_ancestors(impl, full);
  return find_node(impl, full);
}

[[noreturn]] void missing_required(Impl& impl, const std::string& view_path, const std::string& key,
                                   const std::string& help) {
  const std::string table = view_path.empty() ? "the top-level table" : "[" + view_path + "]";
  throw ConfigError(location(impl, view_path) + ": missing required key '" + key + "' in " + table +
                    (help.empty() ? "" : " (" + help + ")"));
}

double number_of(Impl& impl, const std::string& full, const toml::node& n, const std::string& expected) {
  if (auto i = n.as_integer()) return static_cast<double>(i->get());
  if (auto f = n.as_floating_point()) return f->get();
  type_error(impl, full, expected, n);
}

std::vector<double> numbers_of(Impl& impl, const std::string& full, const toml::node& n,
                               const std::string& expected) {
  const auto* arr = n.as_array();
  if (!arr) type_error(impl, full, expected, n);
  std::vector<double> out;
  for (size_t i = 0; i < arr->size(); ++i) {
    const auto& e = (*arr)[i];
    if (!e.is_number()) {
      throw ConfigError(location(impl, full) + ": key '" + full + "' must be " + expected + ", got " +
                        type_name(e) + " at index " + std::to_string(i));
    }
    out.push_back(number_of(impl, full, e, expected));
  }
  return out;
}

std::vector<std::string> strings_of(Impl& impl, const std::string& full, const toml::node& n,
                                    const std::string& expected) {
  const auto* arr = n.as_array();
  if (!arr) type_error(impl, full, expected, n);
  std::vector<std::string> out;
  for (size_t i = 0; i < arr->size(); ++i) {
    const auto* s = (*arr)[i].as_string();
    if (!s) {
      throw ConfigError(location(impl, full) + ": key '" + full + "' must be " + expected + ", got " +
                        type_name((*arr)[i]) + " at index " + std::to_string(i));
    }
    out.push_back(s->get());
  }
  return out;
}

}  // namespace

int64_t ConfigView::get_int(const std::string& key, int64_t def, const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "int", std::to_string(def), help, false);
  if (!n) return def;
  if (auto i = n->as_integer()) return i->get();
  type_error(*impl_, full, "an integer", *n);
}

double ConfigView::get_double(const std::string& key, double def, const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "float", format_double(def), help, false);
  if (!n) return def;
  return number_of(*impl_, full, *n, "a number");
}

bool ConfigView::get_bool(const std::string& key, bool def, const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "bool", def ? "true" : "false", help, false);
  if (!n) return def;
  if (auto b = n->as_boolean()) return b->get();
  type_error(*impl_, full, "a boolean", *n);
}

std::string ConfigView::get_string(const std::string& key, const std::string& def, const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "string", json_quote(def), help, false);
  if (!n) return def;
  if (auto s = n->as_string()) return s->get();
  type_error(*impl_, full, "a string", *n);
}

std::vector<std::string> ConfigView::get_strings(const std::string& key, const std::vector<std::string>& def,
                                                 const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "string[]", format_list(def), help, false);
  if (!n) return def;
  return strings_of(*impl_, full, *n, "an array of strings");
}

std::vector<double> ConfigView::get_doubles(const std::string& key, const std::vector<double>& def,
                                            const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "float[]", format_list(def), help, false);
  if (!n) return def;
  return numbers_of(*impl_, full, *n, "an array of numbers");
}

std::vector<int64_t> ConfigView::get_ints(const std::string& key, const std::vector<int64_t>& def,
                                          const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "int[]", format_list(def), help, false);
  if (!n) return def;
  const auto* arr = n->as_array();
  if (!arr) type_error(*impl_, full, "an array of integers", *n);
  std::vector<int64_t> out;
  for (size_t i = 0; i < arr->size(); ++i) {
    const auto* v = (*arr)[i].as_integer();
    if (!v) {
      throw ConfigError(location(*impl_, full) + ": key '" + full + "' must be an array of integers, got " +
                        type_name((*arr)[i]) + " at index " + std::to_string(i));
    }
    out.push_back(v->get());
  }
  return out;
}

int64_t ConfigView::require_int(const std::string& key, const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "int", "", help, true);
  if (!n) missing_required(*impl_, path_, key, help);
  if (auto i = n->as_integer()) return i->get();
  type_error(*impl_, full, "an integer", *n);
}

double ConfigView::require_double(const std::string& key, const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "float", "", help, true);
  if (!n) missing_required(*impl_, path_, key, help);
  return number_of(*impl_, full, *n, "a number");
}

std::string ConfigView::require_string(const std::string& key, const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "string", "", help, true);
  if (!n) missing_required(*impl_, path_, key, help);
  if (auto s = n->as_string()) return s->get();
  type_error(*impl_, full, "a string", *n);
}

std::vector<double> ConfigView::get_double_or_list(const std::string& key, const std::vector<double>& def,
                                                   const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "float|float[]", format_list(def), help, false);
  if (!n) return def;
  if (n->is_number()) return {number_of(*impl_, full, *n, "a number or an array of numbers")};
  return numbers_of(*impl_, full, *n, "a number or an array of numbers");
}

std::vector<std::string> ConfigView::get_string_or_list(const std::string& key,
                                                        const std::vector<std::string>& def,
                                                        const std::string& help) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  const auto* n = declare(*impl_, full, "string|string[]", format_list(def), help, false);
  if (!n) return def;
  if (auto s = n->as_string()) return {s->get()};
  return strings_of(*impl_, full, *n, "a string or an array of strings");
}

// ---- structure ------------------------------------------------------------------------------------

bool ConfigView::has(const std::string& key) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  return find_node(*impl_, join_path(path_, key)) != nullptr;
}

bool ConfigView::is_table(const std::string& key) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto* n = find_node(*impl_, join_path(path_, key));
  return n && n->is_table();
}

ConfigView ConfigView::sub(const std::string& key) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  mark_with_ancestors(*impl_, full);
  if (const auto* n = find_node(*impl_, full); n && !n->is_table()) type_error(*impl_, full, "a table", *n);
  return ConfigView(impl_, full);
}

std::vector<std::string> ConfigView::keys() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto* n = find_node(*impl_, path_);
  if (!n || !n->is_table()) return {};
  // Document order: keys from the file by position, keys added by --set after them.
  std::vector<std::tuple<int, uint32_t, uint32_t, std::string>> items;
  for (const auto& [k, v] : *n->as_table()) {
    const auto& pos = k.source().begin.line > 0 ? k.source().begin : v.source().begin;
    items.emplace_back(pos.line > 0 ? 0 : 1, pos.line, pos.column, std::string(k.str()));
  }
  std::sort(items.begin(), items.end());
  std::vector<std::string> out;
  for (auto& it : items) out.push_back(std::get<3>(it));
  return out;
}

void ConfigView::mark_read(const std::string& key) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  impl_->read_subtree.insert(full);
  mark_with_ancestors(*impl_, full);
}

std::string ConfigView::where(const std::string& key) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  return location(*impl_, join_path(path_, key));
}

std::string ConfigView::path() const { return path_; }
std::string ConfigView::source() const { return impl_->source; }

bool ConfigView::empty() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto* n = find_node(*impl_, path_);
  return !n || !n->is_table() || n->as_table()->empty();
}

void ConfigView::fail(const std::string& key, const std::string& message) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto full = join_path(path_, key);
  throw ConfigError(location(*impl_, full) + ": " + (full.empty() ? "" : full + ": ") + message);
}

void ConfigView::check_all_read() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  auto& impl = *impl_;
  const auto* start = find_node(impl, path_);
  if (!start || !start->is_table() || subtree_read(impl, path_)) return;

  // Names a getter asked for, per table: the candidates for "did you mean".
  std::map<std::string, std::set<std::string>> known;
  for (const auto& p : impl.read) known[parent_path(p)].insert(last_component(p));
  for (const auto& [p, opt] : impl.declared) known[parent_path(p)].insert(last_component(p));

  struct Unknown {
    int from_cli;
    uint32_t line, column;
    std::string text;
    bool operator<(const Unknown& o) const {
      return std::tie(from_cli, line, column, text) < std::tie(o.from_cli, o.line, o.column, o.text);
    }
  };
  std::vector<Unknown> unknown;

  std::function<void(const toml::table&, const std::string&)> walk = [&](const toml::table& tbl,
                                                                          const std::string& prefix) {
    for (const auto& [k, v] : tbl) {
      const std::string name(k.str());
      const std::string full = join_path(prefix, name);
      if (subtree_read(impl, full)) continue;
      if (impl.read.count(full)) {
        if (v.is_table()) walk(*v.as_table(), full);
        continue;
      }
      std::string text = location(impl, full) + ": unknown key '" + full + "'";
      std::string best;
      size_t best_d = 3;
      for (const auto& cand : known[prefix]) {
        if (cand == name) continue;
        const size_t d = edit_distance(name, cand);
        if (d < best_d) best_d = d, best = cand;
      }
      if (!best.empty()) text += "; did you mean '" + best + "'?";
      const auto& pos = k.source().begin.line > 0 ? k.source().begin : v.source().begin;
      unknown.push_back({pos.line > 0 ? 0 : 1, pos.line, pos.column, std::move(text)});
    }
  };
  walk(*start->as_table(), path_);
  if (unknown.empty()) return;
  std::sort(unknown.begin(), unknown.end());
  std::string msg;
  for (size_t i = 0; i < unknown.size(); ++i) msg += (i ? "\n" : "") + unknown[i].text;
  throw ConfigError(msg);
}

std::vector<ConfigOption> ConfigView::declared() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::vector<ConfigOption> out;
  for (const auto& [k, opt] : impl_->declared) {
    if (path_.empty() || k.compare(0, path_.size() + 1, path_ + ".") == 0) out.push_back(opt);
  }
  return out;
}

std::string ConfigView::canonical() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const auto* n = find_node(*impl_, path_);
  if (!n) return "{}";
  std::string out;
  canonical_node(*n, out);
  return out;
}

std::string ConfigView::to_toml() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::ostringstream os;
  os << toml::toml_formatter{impl_->root};
  return os.str();
}

}  // namespace colm
