// Example out-of-tree task plugin "csv_qa": question/answer pairs from CSV files (one per split, a
// header row first), a prompt template, and exact match of the answer as the metric.
//
// Config ([task] keys besides core's plugin):
//   train_path, valid_path, test_path   CSV file of each split (at least one)
//   question_column, answer_column      header names of the two columns ("question", "answer")
//   prompt_template                     "{question}" is replaced by the question
//   max_tokens, stop                    generation settings (32, ["\n"])
//   ignore_case                         compare answers case-insensitively (false)
#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "colm/hash.hpp"
#include "colm/plugin.hpp"

namespace csv_qa {

// One CSV record and the line it starts on (for error messages).
struct Record {
  std::vector<std::string> fields;
  int64_t line = 0;
};

// RFC 4180: comma-separated fields, optionally in double quotes; inside quotes "" is one quote and
// commas and line breaks are literal. LF or CRLF ends a record; blank lines are skipped.
std::vector<Record> read_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw colm::Error("cannot open CSV file '" + path + "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  std::vector<Record> records;
  Record rec;
  std::string field;
  bool quoted = false;
  int64_t line = 1;
  rec.line = line;
  auto end_field = [&] {
    rec.fields.push_back(field);
    field.clear();
  };
  auto end_record = [&] {
    end_field();
    const bool blank = rec.fields.size() == 1 && rec.fields[0].empty();
    if (!blank) records.push_back(rec);
    rec = Record{};
  };
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;  // a UTF-8 byte order mark
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (c == '"') {
      if (!field.empty()) {
        throw colm::Error(path + ":" + std::to_string(line) +
                          ": a quote inside an unquoted field (quote the whole field and double the quote)");
      }
      quoted = true;
    } else if (c == ',') {
      end_field();
    } else if (c == '\n' || (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n')) {
      if (c == '\r') ++i;
      end_record();
      rec.line = ++line;
    } else {
      field += c;
    }
  }
  if (quoted) throw colm::Error(path + ":" + std::to_string(rec.line) + ": a quoted field is never closed");
  if (!field.empty() || !rec.fields.empty()) end_record();
  return records;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

class CsvTask final : public colm::Task {
 public:
  explicit CsvTask(const colm::ConfigView& c) {
    std::map<std::string, std::string> paths;
    for (const std::string split : {"train", "valid", "test"}) {
      const auto path = c.get_string(split + "_path", "", "CSV file of the " + split + " split: a header row, then one "
                                                          "question/answer pair per row");
      if (!path.empty()) paths[split] = path;
    }
    const auto question_column = c.get_string("question_column", "question", "header of the question column");
    const auto answer_column = c.get_string("answer_column", "answer", "header of the answer column");
    const auto prompt_template = c.get_string("prompt_template", "Question: {question}\nAnswer:",
                                              "the prompt; {question} is replaced by the question");
    gen_.max_tokens = c.get_int("max_tokens", 32, "generated tokens per example, at most");
    gen_.stop = c.get_strings("stop", {"\n"}, "generation stops after any of these strings");
    ignore_case_ = c.get_bool("ignore_case", false, "compare answers case-insensitively");
    if (paths.empty()) c.fail("test_path", "give at least one of train_path, valid_path, test_path");
    if (prompt_template.find("{question}") == std::string::npos) c.fail("prompt_template", "has no {question}");
    if (gen_.max_tokens < 1) c.fail("max_tokens", "must be >= 1");

    for (const auto& entry : paths) {
      const std::string& split = entry.first;
      const std::string& path = entry.second;
      const std::string key = split + "_path";
      std::vector<Record> rows;
      try {
        rows = read_csv(path);
      } catch (const colm::Error& e) {
        c.fail(key, e.what());
      }
      if (rows.size() < 2) c.fail(key, path + ": needs a header row and at least one question/answer row");
      const auto& header = rows[0].fields;
      const auto column = [&](const std::string& name, const std::string& option) {
        for (size_t k = 0; k < header.size(); ++k) {
          if (header[k] == name) return k;
        }
        std::string columns;
        for (const auto& h : header) columns += (columns.empty() ? "" : ", ") + h;
        c.fail(option, path + ": no column '" + name + "' in the header (columns: " + columns + ")");
      };
      const size_t q = column(question_column, "question_column");
      const size_t a = column(answer_column, "answer_column");
      auto& list = data_[split];
      for (size_t r = 1; r < rows.size(); ++r) {
        const auto& f = rows[r].fields;
        if (f.size() != header.size()) {
          c.fail(key, path + ":" + std::to_string(rows[r].line) + ": " + std::to_string(f.size()) + " fields, the header has " +
                          std::to_string(header.size()));
        }
        colm::Example e;
        e.id = split + "-" + std::to_string(r - 1);
        e.prompt = replace_all(prompt_template, "{question}", f[q]);
        e.reference = f[a];
        // Trained on as prompt + target: the answer, then the first stop string to end on.
        e.target = " " + f[a] + (gen_.stop.empty() ? "" : gen_.stop.front());
        list.push_back(std::move(e));
      }
    }
  }

  std::vector<std::string> splits() const override {
    std::vector<std::string> out;
    for (const char* s : {"train", "valid", "test"}) {
      if (data_.count(s)) out.push_back(s);
    }
    return out;
  }

  std::vector<colm::Example> examples(const std::string& split) override {
    const auto it = data_.find(split);
    if (it == data_.end()) {
      std::string names;
      for (const auto& s : splits()) names += (names.empty() ? "" : ", ") + s;
      throw colm::Error("[csv_qa] unknown split '" + split + "' (splits: " + names + ")");
    }
    return it->second;
  }

  colm::GenerationSettings generation() const override { return gen_; }

  // exact_match: the output up to the first stop string equals the answer, both with surrounding
  // whitespace trimmed and inner runs of whitespace collapsed (and case folded with ignore_case).
  std::map<std::string, double> score(const colm::Example& example, const std::string& output) const override {
    return {{"exact_match", normalize(cut_at_stop(output)) == normalize(example.reference) ? 1.0 : 0.0}};
  }

  std::string primary_metric() const override { return "exact_match"; }

  // Core's default hashes the examples and generation settings; ignore_case changes the scores too,
  // so it is part of the identity (results computed with the other setting are not reused).
  std::string fingerprint() override {
    return colm::Hasher().add(colm::Task::fingerprint()).add(std::string(ignore_case_ ? "ignore_case" : "exact_case")).hex();
  }

 private:
  std::string cut_at_stop(const std::string& s) const {
    size_t end = s.size();
    for (const auto& stop : gen_.stop) {
      if (!stop.empty()) end = std::min(end, s.find(stop));
    }
    return s.substr(0, end);
  }

  std::string normalize(const std::string& s) const {
    std::string out;
    bool space = false;
    for (const char ch : s) {
      const auto u = static_cast<unsigned char>(ch);
      if (std::isspace(u)) {
        space = !out.empty();
        continue;
      }
      if (space) out += ' ';
      space = false;
      out += ignore_case_ ? static_cast<char>(std::tolower(u)) : ch;
    }
    return out;
  }

  colm::GenerationSettings gen_;
  bool ignore_case_ = false;
  std::map<std::string, std::vector<colm::Example>> data_;
};

std::unique_ptr<colm::Task> make_csv_qa(const colm::ConfigView& config, const colm::PluginContext& /*context*/) {
  return std::make_unique<CsvTask>(config);
}

}  // namespace csv_qa

COLM_PLUGIN(task, "csv_qa", "1.0.0", csv_qa::make_csv_qa)
