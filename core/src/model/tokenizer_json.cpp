// Fast reading of tokenizer.json: a SAX pass that streams model.vocab and model.merges (99% of a
// 150k-token file) into flat tables and builds an ordinary DOM for everything else.
#include "colm/error.hpp"
#include "model/tokenizer_internal.hpp"

namespace colm::tok {
namespace {

using json = nlohmann::json;

// Forwards every event to nlohmann's DOM builder except the contents of model.vocab / model.merges,
// which never become DOM nodes (building and freeing ~450k small nodes dominated the load time).
class TokenizerSax {
 public:
  TokenizerSax(json& root, BpeTables& tables, const std::string& where) : dom_(root), tables_(tables), where_(where) {}

  bool null() { return in_table() ? bad_value("null") : dom_.null(); }
  bool boolean(bool v) { return in_table() ? bad_value("a boolean") : dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == Mode::kVocab) return vocab_id(v);
    return in_table() ? bad_value("a number") : dom_.number_integer(v);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == Mode::kVocab) return vocab_id(v > 0x7FFFFFFFull ? -1 : static_cast<int64_t>(v));
    return in_table() ? bad_value("a number") : dom_.number_unsigned(v);
  }
  bool number_float(json::number_float_t v, const json::string_t& s) {
    return in_table() ? bad_value("a number") : dom_.number_float(v, s);
  }
  bool binary(json::binary_t& b) { return in_table() ? bad_value("binary") : dom_.binary(b); }

  bool string(json::string_t& s) {
    if (mode_ == Mode::kVocab) return bad_value("a string");
    if (mode_ == Mode::kMerges) {
      if (pair_depth_ == 1) {
        pair_.push_back(std::move(s));
        return true;
      }
      // "a b": tokens never contain the separating space in this legacy form.
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw Error(where_ + ": model.merges[" + std::to_string(tables_.merges.size()) + "] \"" + s + "\" is not \"a b\"");
      tables_.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      return true;
    }
    if (path_.size() == 2 && path_[1] == "model" && key_ == "type") model_type_ = s;
    return dom_.string(s);
  }

  bool start_object(std::size_t n) {
    if (mode_ == Mode::kMerges) return bad_value("an object");
    if (mode_ == Mode::kVocab) return bad_value("an object");
    if (pending_ == Mode::kVocab) {
      mode_ = Mode::kVocab;
      pending_ = Mode::kNone;
      tables_.has_vocab = true;
      return true;
    }
    if (pending_ == Mode::kMerges) return bad_table("model.merges must be an array");
    path_.push_back(std::move(key_));
    key_.clear();
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    if (mode_ == Mode::kVocab) {
      key_ = std::move(k);
      return true;
    }
    // Only a BPE model's tables are streamed (a Unigram vocab is a list; its type error comes later).
    if (path_.size() == 2 && path_[1] == "model" && (k == "vocab" || k == "merges") &&
        (model_type_.empty() || model_type_ == "BPE")) {
      pending_ = k == "vocab" ? Mode::kVocab : Mode::kMerges;
      return true;  // the key is not forwarded: the DOM's model has neither table
    }
    key_ = k;
    return dom_.key(k);
  }
  bool end_object() {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kNone;
      return true;
    }
    path_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    if (mode_ == Mode::kVocab) return bad_value("an array");
    if (mode_ == Mode::kMerges) {
      if (pair_depth_ != 0) return bad_value("a nested array");
      pair_depth_ = 1;
      pair_.clear();
      return true;
    }
    if (pending_ == Mode::kMerges) {
      mode_ = Mode::kMerges;
      pending_ = Mode::kNone;
      tables_.has_merges = true;
      return true;
    }
    if (pending_ == Mode::kVocab) return bad_table("model.vocab must be an object {token: id}");
    path_.push_back(std::string());
    return dom_.start_array(n);
  }
  bool end_array() {
    if (mode_ == Mode::kMerges) {
      if (pair_depth_ == 0) {
        mode_ = Mode::kNone;
        return true;
      }
      pair_depth_ = 0;
      if (pair_.size() != 2)
        throw Error(where_ + ": model.merges[" + std::to_string(tables_.merges.size()) + "] must be [a, b]");
      tables_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      return true;
    }
    path_.pop_back();
    return dom_.end_array();
  }
  bool parse_error(std::size_t pos, const std::string& token, const nlohmann::detail::exception& e) {
    return dom_.parse_error(pos, token, e);
  }

 private:
  enum class Mode { kNone, kVocab, kMerges };
  bool in_table() const { return mode_ != Mode::kNone || pending_ != Mode::kNone; }
  bool vocab_id(int64_t id) {
    if (id < 0 || id > 0x7FFFFFFF)
      throw Error(where_ + ": model.vocab[\"" + key_ + "\"] has id " + std::to_string(id) + " out of range");
    tables_.vocab.emplace_back(std::move(key_), id);
    return true;
  }
  bool bad_value(const char* what) {
    if (pending_ == Mode::kVocab) return bad_table("model.vocab must be an object {token: id}");
    if (pending_ == Mode::kMerges) return bad_table("model.merges must be an array");
    if (mode_ == Mode::kVocab) throw Error(where_ + ": model.vocab[\"" + key_ + "\"] is " + what + ", not an integer id");
    throw Error(where_ + ": model.merges[" + std::to_string(tables_.merges.size()) + "] contains " + what +
                " (expected \"a b\" or [a, b])");
  }
  bool bad_table(const std::string& msg) { throw Error(where_ + ": " + msg); }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  BpeTables& tables_;
  const std::string& where_;
  std::vector<std::string> path_;  // key that led to each open container ("" for array items)
  std::string key_;
  std::string model_type_;  // model.type once seen (HF writes it first)
  Mode mode_ = Mode::kNone, pending_ = Mode::kNone;
  int pair_depth_ = 0;
  std::vector<std::string> pair_;
};

}  // namespace

json parse_tokenizer_json(const std::string& text, const std::string& where, BpeTables& tables) {
  json root;
  TokenizerSax sax(root, tables, where);
  try {
    json::sax_parse(text, &sax);
  } catch (const json::exception& e) {
    throw Error(where + ": not valid JSON: " + e.what());
  }
  return root;
}

}  // namespace colm::tok
