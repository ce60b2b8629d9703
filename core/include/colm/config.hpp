// ConfigView: the core-owned, read-tracking view of one TOML table that core and plugins read
// their options through. Parsing, --set overrides and unknown-key reporting live in core.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "colm/error.hpp"

namespace colm {

// One option as declared by a getter: used for error messages and for `--help`-style listings.
struct ConfigOption {
  std::string key;       // dotted path from the document root, e.g. "experts.base.n_layer"
  std::string type;      // "int", "float", "bool", "string", "string[]", "float[]", "int[]", "table"
  std::string default_value;  // printed form; empty when required
  std::string help;
  bool required = false;
};

class COLM_VISIBLE ConfigView {
 public:
  ConfigView();  // an empty view (every getter returns its default)
  ~ConfigView();
  ConfigView(const ConfigView&);
  ConfigView& operator=(const ConfigView&);

  // Parses a TOML file; syntax errors become ConfigError with file:line:column.
  static ConfigView from_file(const std::string& path);
  static ConfigView from_string(const std::string& toml, const std::string& source_name = "<string>");
  // Applies `a.b.c=value` (value parsed as a TOML value, else taken as a string).
  void apply_override(const std::string& assignment);

  // Typed getters. Each marks the key as read and records its declaration. A key present with the
  // wrong type is a ConfigError naming the key and its location. An int is accepted where a float is
  // expected.
  int64_t get_int(const std::string& key, int64_t def, const std::string& help) const;
  double get_double(const std::string& key, double def, const std::string& help) const;
  bool get_bool(const std::string& key, bool def, const std::string& help) const;
  std::string get_string(const std::string& key, const std::string& def, const std::string& help) const;
  std::vector<std::string> get_strings(const std::string& key, const std::vector<std::string>& def,
                                       const std::string& help) const;
  std::vector<double> get_doubles(const std::string& key, const std::vector<double>& def,
                                  const std::string& help) const;
  std::vector<int64_t> get_ints(const std::string& key, const std::vector<int64_t>& def,
                                const std::string& help) const;
  // Required variants: a missing key is a ConfigError naming it and the table it belongs in.
  int64_t require_int(const std::string& key, const std::string& help) const;
  double require_double(const std::string& key, const std::string& help) const;
  std::string require_string(const std::string& key, const std::string& help) const;

  // A scalar-or-list value as a list of strings/doubles (sweep axes accept both forms).
  std::vector<double> get_double_or_list(const std::string& key, const std::vector<double>& def,
                                         const std::string& help) const;
  std::vector<std::string> get_string_or_list(const std::string& key, const std::vector<std::string>& def,
                                              const std::string& help) const;

  bool has(const std::string& key) const;
  bool is_table(const std::string& key) const;
  // The sub-table at key (an empty view rooted there when absent). Marks the key as read.
  ConfigView sub(const std::string& key) const;
  // Keys present in this table, in document order.
  std::vector<std::string> keys() const;
  // Marks key (and everything under it) as read without reading it.
  void mark_read(const std::string& key) const;

  // "file:line:column" of key in this table (of the table itself when key is empty).
  std::string where(const std::string& key = "") const;
  // Dotted path of this table from the document root ("" for the root).
  std::string path() const;
  std::string source() const;  // file name
  bool empty() const;

  // Throws ConfigError "<file>:<line>:<col>: <path.key>: <message>".
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  // Every key under this table that no getter read -> one ConfigError listing each with its location.
  void check_all_read() const;
  // Options declared so far under this table (after the getters ran).
  std::vector<ConfigOption> declared() const;

  // A canonical serialisation of this table (sorted keys, normalised numbers), for content hashes.
  std::string canonical() const;
  // The whole document as TOML text (after overrides).
  std::string to_toml() const;

  struct Impl;

 private:
  ConfigView(std::shared_ptr<Impl> impl, std::string path);
  std::shared_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace colm
