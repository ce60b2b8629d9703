// share_vocab(): an expert seen through the ids it shares with its collaborators (vocab_check.hpp).
// The one place where logits are cut to [0, V); decoding, training and scoring then need no masks.
#include <torch/torch.h>

#include "colm/hash.hpp"
#include "model/vocab_check.hpp"

namespace colm {
namespace {

class SharedVocabExpert : public Expert {
 public:
  SharedVocabExpert(std::shared_ptr<Expert> inner, const SharedVocab& shared)
      : inner_(std::move(inner)), tokenizer_(shared.tokenizer), vocab_(shared.size) {
    fingerprint_ = Hasher()
                       .add("shared-vocab-v1")
                       .add(inner_->fingerprint())
                       .add(vocab_)
                       .add(tokenizer_.fingerprint())
                       .hex();
  }

  ExpertInfo info() const override {
    auto i = inner_->info();
    i.vocab_size = vocab_;
    return i;
  }
  const Tokenizer& tokenizer() const override { return tokenizer_; }
  torch::Device device() const override { return inner_->device(); }

  ExpertOutput forward(const torch::Tensor& ids, const torch::Tensor& mask) override {
    auto out = inner_->forward(ids, mask);
    out.logits = out.logits.narrow(-1, 0, vocab_);  // [B,T,V]
    return out;
  }
  std::unique_ptr<DecodeState> new_state(int64_t rows) const override { return inner_->new_state(rows); }
  ExpertOutput extend(DecodeState& state, const std::vector<int64_t>& rows,
                      const std::vector<std::vector<int64_t>>& tokens) override {
    auto out = inner_->extend(state, rows, tokens);
    out.logits = out.logits.narrow(-1, 0, vocab_);  // [R,V]
    return out;
  }

  std::vector<torch::Tensor> parameters() override { return inner_->parameters(); }
  void set_training(bool training) override { inner_->set_training(training); }
  void save(const std::string& dir) const override { inner_->save(dir); }
  std::string fingerprint() const override { return fingerprint_; }

 private:
  std::shared_ptr<Expert> inner_;
  Tokenizer tokenizer_;
  int64_t vocab_;
  std::string fingerprint_;
};

}  // namespace

std::shared_ptr<Expert> share_vocab(std::shared_ptr<Expert> expert, const SharedVocab& shared) {
  COLM_CHECK(expert != nullptr, "[vocab] share_vocab: null expert");
  COLM_CHECK(shared.size > 0 && shared.tokenizer.valid(), "[vocab] share_vocab: no shared vocabulary");
  const auto info = expert->info();
  COLM_CHECK(info.vocab_size >= shared.size, "[vocab] expert " << info.source << " has " << info.vocab_size
                                                               << " output rows, fewer than the " << shared.size
                                                               << " shared ids");
  const Tokenizer& tok = expert->tokenizer();
  const bool same_tokenizer = tok.fingerprint() == shared.tokenizer.fingerprint();
  if (!same_tokenizer) {
    COLM_CHECK(tok.vocab_size() > shared.size, "[vocab] expert " << info.source << ": its tokenizer differs from the "
                                                                 << shared.size << "-id shared one and is no larger");
    const auto why = extension_mismatch(shared.tokenizer, tok);
    COLM_CHECK(why.empty(), "[vocab] expert " << info.source << ": its tokenizer does not extend the " << shared.size
                                              << "-id shared one: " << why);
  }
  COLM_CHECK(tok.bos_id() == shared.tokenizer.bos_id() && tok.eos_id() == shared.tokenizer.eos_id() &&
                 tok.pad_id() == shared.tokenizer.pad_id(),
             "[vocab] expert " << info.source << ": its bos/eos/pad ids differ from the shared tokenizer's");
  if (info.vocab_size == shared.size && same_tokenizer) return expert;
  return std::make_shared<SharedVocabExpert>(std::move(expert), shared);
}

}  // namespace colm
