// The collaborative decoder (Co-LLM): a base model and M assistants generate together, a deferral
// policy choosing at every token who emits it. Also the teacher-forced analysis of a policy.
// Experts, policies and tokenizers come from plugins; metrics and storage are left to the caller.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "colm/expert.hpp"
#include "colm/policy.hpp"

namespace colm {

// One generated token as recorded for reports and the results store.
struct TokenTrace {
  int64_t id = 0;
  std::string text;             // decode({id}) (may be a partial UTF-8 sequence for byte-level tokens)
  int source = 0;               // 0: the base emitted it; j: assistant j (1-based)
  std::vector<float> probs;     // the policy's P(Z = 0..M) at this step (empty unless trace_probs)
  std::vector<int64_t> top1;    // M+1 entries: each model's argmax at this step, -1 when not computed
};

struct DecodeResult {
  std::string output;           // decoded generated text, cut before a stop string, without EOS
  std::vector<int64_t> ids;     // generated ids (EOS and the token completing a stop string included)
  std::vector<TokenTrace> trace;  // one per entry of ids
  int64_t n_deferred = 0;       // tokens with source != 0
  double latency_s = 0;         // from when the example entered a row until it finished
  std::string stop_reason;      // "eos", "stop", "max_tokens" or "max_positions"
};

struct DecodeOptions {
  // Defer when 1 - P(Z=0) > threshold (eta), to the assistant with the highest P(Z=j).
  double threshold = 0.5;
  // "defer": the chosen model emits the token. "mixture": the token comes from
  // sum_j P(Z=j) * softmax(logits_j) (every model runs at every step).
  std::string strategy = "defer";
  bool sample = false;          // false: greedy (argmax)
  double temperature = 1.0;     // sampling only; > 0
  double top_p = 1.0;           // sampling only; in (0, 1]
  uint64_t seed = 0;            // run seed, mixed with each example's seed and the position
  // Rows decoded together. Continuous batching: when a row's example finishes, the row takes the next
  // waiting example at once (its caches are reset and the prompt read), so no row waits for the
  // batch's longest example.
  int64_t batch_size = 8;
  int64_t max_tokens = 64;      // generated tokens per example, at most
  std::vector<std::string> stop;  // a row finishes when its generated text contains one of these
  bool add_special_tokens = true; // encode prompts with the tokenizer's post-processor (e.g. BOS)
  bool trace_probs = true;      // fill TokenTrace::probs
  // Optional: called after every generated token (streaming). `ids` is the example's generated ids
  // so far, the new token included.
  std::function<void(int64_t example, const TokenTrace& token, const std::vector<int64_t>& ids)> on_token;
  // Optional: called after every step in which examples finished, with the examples finished so far
  // and the tokens those examples generated (progress displays).
  std::function<void(int64_t examples_done, int64_t tokens)> on_finished;
  // Optional: called once per example as soon as it finishes (its result is final), in finishing
  // order: lets a caller store results while the rest decode.
  std::function<void(int64_t example, const DecodeResult& result)> on_result;
};


// Decodes every prompt with the base and the assistants (M >= 0; M = 0 is plain decoding and needs a
// policy returning [R, 1], see decode_single). Results are in prompt order. Deterministic: the same
// inputs, options and seeds give the same tokens whatever the batch size.
// example_seeds: one per prompt (empty: the prompt's index is its seed).
std::vector<DecodeResult> collaborative_decode(Expert& base, const std::vector<Expert*>& assistants,
                                               DeferralPolicy& policy, const std::vector<std::string>& prompts,
                                               const std::vector<uint64_t>& example_seeds,
                                               const DecodeOptions& options);

// One model alone: collaborative_decode with no assistants and a policy that never defers.
std::vector<DecodeResult> decode_single(Expert& model, const std::vector<std::string>& prompts,
                                        const std::vector<uint64_t>& example_seeds, const DecodeOptions& options);

// Decode-time combinations of several models' logits (no deferral policy), the paper's baselines:
//   "contrastive" (contrastive decoding): models = {expert, amateur}; the token is the argmax over the
//     plausible set {x : p_e(x) >= alpha * max p_e} of log p_e(x) - beta * log p_a(x);
//   "proxy" (proxy tuning): models = {large, tuned, untuned}; logits_large + (logits_tuned - logits_untuned).
// Every model keeps its own KV cache and reads every token. Sampling (options.sample) draws from the
// softmax of the combined scores. TokenTrace::source is 0 when the token is models[0]'s own argmax and
// 1 when the combination changed it (so n_deferred counts those tokens); probs is that one-hot pair.
// The models must share the tokenizer of models[0].
struct CombineOptions {
  std::string strategy;  // "contrastive" or "proxy"
  double alpha = 0.1;
  double beta = 0.5;
};
std::vector<DecodeResult> combined_decode(const std::vector<Expert*>& models, const CombineOptions& combine,
                                          const std::vector<std::string>& prompts,
                                          const std::vector<uint64_t>& example_seeds, const DecodeOptions& options);
// One step of a combination on last-position logits: models' logits [R, V] each -> scores [R, V]
// (-inf outside contrastive decoding's plausible set). The emitted token is the argmax (greedy).
torch::Tensor combined_scores(const std::vector<torch::Tensor>& logits, const CombineOptions& combine);

// Teacher-forced analysis: every model reads prompt + target once; for each target position t the
// policy sees the state before target[t] (gold = target[t]).
struct TeacherForcedTrace {
  torch::Tensor probs;  // [T, M+1] float32: the policy's P(Z = j) before each target token
  torch::Tensor top1;   // [T, M+1] int64: each model's argmax before each target token
  torch::Tensor gold;   // [T] int64: the target tokens
};
TeacherForcedTrace teacher_forced_trace(Expert& base, const std::vector<Expert*>& assistants,
                                        DeferralPolicy& policy, const std::vector<int64_t>& prompt_ids,
                                        const std::vector<int64_t>& target_ids, uint64_t seed = 0);

// Several examples at once: each model reads `batch_size` examples in one right-padded forward and
// the policy sees all their positions in one call. Each trace equals teacher_forced_trace's for that
// example (the policy's rows are independent; the padding is masked).
struct TeacherForcedExample {
  std::vector<int64_t> prompt_ids, target_ids;
  uint64_t seed = 0;
};
std::vector<TeacherForcedTrace> teacher_forced_traces(Expert& base, const std::vector<Expert*>& assistants,
                                                      DeferralPolicy& policy,
                                                      const std::vector<TeacherForcedExample>& examples,
                                                      int64_t batch_size);

// The seed a policy sees for (run seed, example seed, position): what PolicyInput::row_seeds holds.
uint64_t decode_row_seed(uint64_t run_seed, uint64_t example_seed, int64_t position);

}  // namespace colm
