// The collaborative decoder: CollaborativeRows::step() is the Co-LLM step as the paper states it, run
// on a pool of rows by decode_continuously() (continuous batching); the lazy catch-up of assistant
// caches, token picking, seeding and checks live beside it in this file. Models, policies and
// tokenizers are plugins; scoring and storing the outputs is the caller's.
#include "method/decode.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <limits>
#include <memory>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

namespace colm {
namespace {

// ---------------------------------------------------------------------------------------------
// Seeds: counter-based, so a row's random numbers depend on (run seed, example seed, position)
// only, never on which other examples share its batch.

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t mix_seed(uint64_t a, uint64_t b) { return splitmix64(a ^ splitmix64(b + 0x632be59bd9b4e019ULL)); }

// The sampler's stream, distinct from the stream a policy derives from the same row seed.
constexpr uint64_t kSamplerStream = 0x73616d706c657221ULL;

double uniform01(uint64_t h) { return static_cast<double>(splitmix64(h) >> 11) * 0x1.0p-53; }

// ---------------------------------------------------------------------------------------------
// Logits the decoder may emit from: the tokenizer's ids only. Output rows past the tokenizer's
// vocabulary (embedding padding) are cut off, which is the same as masking them to -inf and lets
// models with different padding be compared column for column.
torch::Tensor usable_logits(const torch::Tensor& logits, int64_t vocab, const torch::Device& device) {
  return logits.narrow(-1, 0, vocab).to(device, torch::kFloat32);
}

// Picks one token from a distribution row `probs` [V] (float64, sums to 1): argmax when greedy,
// else inverse-CDF sampling with uniform `u` over the smallest top-p set of tokens.
int64_t sample_top_p(const torch::Tensor& probs, double top_p, double u) {
  auto [sorted, order] = probs.sort(/*dim=*/0, /*descending=*/true);
  const auto p = sorted.accessor<double, 1>();
  const auto idx = order.accessor<int64_t, 1>();
  const int64_t V = p.size(0);
  double kept = 0;
  int64_t n = 0;
  while (n < V && (n == 0 || kept < top_p)) kept += p[n++];
  double target = u * kept, acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc += p[i];
    if (target < acc) return idx[i];
  }
  return idx[n - 1];
}

// A row's next token from a model's logits [V].
int64_t pick_from_logits(const torch::Tensor& logits, const DecodeOptions& o, double u) {
  if (!o.sample) return logits.argmax().item<int64_t>();
  const auto probs = torch::softmax(logits.to(torch::kFloat64) / o.temperature, 0);
  return sample_top_p(probs, o.top_p, u);
}

// A row's next token from a mixture distribution [V] (already a distribution).
int64_t pick_from_probs(const torch::Tensor& probs, const DecodeOptions& o, double u) {
  if (!o.sample) return probs.argmax().item<int64_t>();
  return sample_top_p(probs.to(torch::kFloat64) / probs.sum().item<double>(), o.top_p, u);
}

// ---------------------------------------------------------------------------------------------
// An assistant's KV cache, caught up lazily: only when its logits are needed (the policy asks for
// them or a token is deferred to it) does it read, in one extend() call, every context token it
// has not seen yet, for the rows that need it. An assistant that is never consulted never runs.
class LazyCache {
 public:
  LazyCache(Expert& expert, int64_t rows, int64_t vocab, torch::Device device)
      : expert_(expert), state_(expert.new_state(rows)), seen_(rows, 0), last_(rows), vocab_(vocab), device_(device) {}

  // logits: [rows.size(), V] at the end of each listed row's current context.
  torch::Tensor logits(const std::vector<int64_t>& rows, const std::vector<std::vector<int64_t>>& context) {
    std::vector<int64_t> behind;
    std::vector<std::vector<int64_t>> unseen;
    for (int64_t r : rows) {
      const auto& ctx = context[r];
      if (seen_[r] < static_cast<int64_t>(ctx.size())) {
        behind.push_back(r);
        unseen.emplace_back(ctx.begin() + seen_[r], ctx.end());
      }
    }
    if (!behind.empty()) {
      const auto out = usable_logits(expert_.extend(*state_, behind, unseen).logits, vocab_, device_);  // [B, V]
      for (size_t i = 0; i < behind.size(); ++i) {
        seen_[behind[i]] = static_cast<int64_t>(context[behind[i]].size());
        last_[behind[i]] = out[static_cast<int64_t>(i)];
      }
    }
    std::vector<torch::Tensor> picked;
    picked.reserve(rows.size());
    for (int64_t r : rows) picked.push_back(last_[r]);
    return torch::stack(picked);
  }

  // Row r takes a new sequence: its cache starts empty again.
  void reset(int64_t r) {
    state_->reset(r);
    seen_[r] = 0;
    last_[r] = torch::Tensor();
  }

 private:
  Expert& expert_;
  std::unique_ptr<DecodeState> state_;
  std::vector<int64_t> seen_;        // tokens of each row's context the cache holds
  std::vector<torch::Tensor> last_;  // logits [V] after the last token seen, per row
  int64_t vocab_;
  torch::Device device_;
};

// Checks a policy's answer against its contract: [A, M+1], finite, non-negative, rows summing to 1.
torch::Tensor checked_policy_probs(const torch::Tensor& z, int64_t rows, int64_t models) {
  COLM_CHECK(z.defined(), "[decode] the deferral policy returned an undefined tensor");
  COLM_CHECK(z.dim() == 2 && z.size(0) == rows && z.size(1) == models,
             "[decode] the deferral policy returned probabilities of shape " << z.sizes() << ", expected ["
                                                                              << rows << ", " << models << "]");
  auto p = z.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  // A few numbers per row, checked on the host (a handful of tensor ops would cost more, every step).
  const float* v = p.data_ptr<float>();
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t j = 0; j < models; ++j) {
      const float x = v[r * models + j];
      COLM_CHECK(std::isfinite(x) && x >= 0, "[decode] the deferral policy returned negative or non-finite probabilities");
      sum += x;
    }
    worst = std::max(worst, std::abs(sum - 1));
  }
  COLM_CHECK(worst < 1e-3, "[decode] the deferral policy's probabilities do not sum to 1 (off by " << worst << ")");
  return p;
}

// Everything the loop needs to know about the models, resolved once.
struct Models {
  Expert& base;
  std::vector<Expert*> assistants;
  int64_t vocab = 0;          // the tokenizer's vocabulary: the ids the decoder may emit
  int64_t max_positions = 0;  // the shortest context limit among the models
  std::optional<int64_t> eos;
  torch::Device device;       // the base's device: where the policy's inputs live
};

// The rows decoded together: options.batch_size of them (fewer for fewer prompts). A row holds one
// example at a time; when that example finishes, the row takes the next waiting prompt (continuous
// batching), so no row waits for the longest example of a batch.
struct Batch {
  std::vector<int64_t> examples;              // example index of each row; -1 while the row is free
  std::vector<std::vector<int64_t>> context;  // per row: prompt ids, then generated ids
  std::vector<int64_t> active;                // rows generating, ascending
  std::vector<std::chrono::steady_clock::time_point> start;  // per row: when its example entered
};

// The position of row r's next token in its example's output (the counter its seeds are drawn at).
int64_t next_position(const Batch& b, int64_t r, const std::vector<DecodeResult>& results) {
  return static_cast<int64_t>(results[b.examples[r]].ids.size());
}

// Row r's stop reason after it appended a token, or "" when it goes on.
std::string finish_reason(const Models& m, const DecodeOptions& o, const Batch& b, int64_t r,
                          const DecodeResult& res) {
  const int64_t tok = res.ids.back();
  if (m.eos && tok == *m.eos) return "eos";
  if (!o.stop.empty()) {
    const std::string text = m.base.tokenizer().decode(res.ids);
    for (const auto& s : o.stop)
      if (!s.empty() && text.find(s) != std::string::npos) return "stop";
  }
  if (static_cast<int64_t>(res.ids.size()) >= o.max_tokens) return "max_tokens";
  if (static_cast<int64_t>(b.context[r].size()) >= m.max_positions) return "max_positions";
  return "";
}

// The final text: generated ids without a closing EOS, cut before the earliest stop string.
std::string final_output(const Models& m, const DecodeOptions& o, const DecodeResult& res) {
  std::vector<int64_t> ids = res.ids;
  if (res.stop_reason == "eos") ids.pop_back();
  std::string text = m.base.tokenizer().decode(ids);
  size_t cut = std::string::npos;
  for (const auto& s : o.stop)
    if (!s.empty()) cut = std::min(cut, text.find(s));
  if (cut != std::string::npos) text.resize(cut);
  return text;
}

// One step's decisions for the active rows (index a = place in Batch::active).
struct Step {
  torch::Tensor z;                        // [A, M+1] the policy's P(Z_t = j | x_<t)
  std::vector<uint64_t> row_seeds;        // [A]
  std::vector<int> source;                // [A] who emits: 0 base, j assistant j
  std::vector<int64_t> token;             // [A] the emitted token
  std::vector<std::vector<int64_t>> top1; // [A][M+1] each model's argmax, -1 where it did not run
};

// Fills top1[a][j] from logits [A, V] (or from the rows `pos` of it).
void note_top1(Step& s, int64_t j, const torch::Tensor& logits, const std::vector<int64_t>& pos) {
  const auto arg = logits.argmax(1).to(torch::kCPU).contiguous();
  const int64_t* a = arg.data_ptr<int64_t>();
  for (size_t i = 0; i < pos.size(); ++i) s.top1[pos[i]][j] = a[i];
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// "mixture": x_t from sum_j P(Z_t=j) * P_j(x_t | x_<t); the source is the largest term for x_t.
void emit_mixture(Step& s, const torch::Tensor& base_logits, const std::vector<torch::Tensor>& assistant_logits,
                  const DecodeOptions& o) {
  const double temperature = o.sample ? o.temperature : 1.0;
  std::vector<torch::Tensor> p{torch::softmax(base_logits / temperature, 1)};  // [A, V]
  for (const auto& l : assistant_logits) p.push_back(torch::softmax(l / temperature, 1));
  const auto terms = (torch::stack(p, 1) * s.z.to(base_logits.device()).unsqueeze(2)).to(torch::kCPU);  // [A, M+1, V]
  const auto mix = terms.sum(1);                                                                       // [A, V]
  for (int64_t a = 0; a < mix.size(0); ++a) {
    s.token[a] = pick_from_probs(mix[a], o, uniform01(s.row_seeds[a] ^ kSamplerStream));
    s.source[a] = static_cast<int>(terms[a].select(1, s.token[a]).argmax().item<int64_t>());
  }
}

// "defer": each row's chosen model emits from its own distribution. An assistant that the policy
// did not need runs now, lazily, for exactly the rows deferred to it.
void emit_deferred(Step& s, Models& m, Batch& b, std::vector<LazyCache>& caches, const torch::Tensor& base_logits,
                   const std::vector<torch::Tensor>& assistant_logits, const DecodeOptions& o) {
  const int64_t A = static_cast<int64_t>(b.active.size()), M = static_cast<int64_t>(caches.size());
  for (int64_t j = 0; j <= M; ++j) {
    std::vector<int64_t> rows, pos;  // batch rows whose token model j emits, and their places in `active`
    for (int64_t a = 0; a < A; ++a)
      if (s.source[a] == j) rows.push_back(b.active[a]), pos.push_back(a);
    if (rows.empty()) continue;
    const auto& full = j == 0 ? base_logits : assistant_logits[j - 1];
    if (!o.sample && full.defined()) {
      // Greedy from logits already seen this step: the token is that model's argmax, noted as top1.
      for (int64_t a : pos) s.token[a] = s.top1[a][j];
      continue;
    }
    const auto lj = full.defined() ? full.index_select(0, torch::tensor(pos).to(full.device()))
                                   : caches[j - 1].logits(rows, b.context);  // [n_j, V]
    if (!full.defined()) note_top1(s, j, lj, pos);
    if (!o.sample) {
      for (int64_t a : pos) s.token[a] = s.top1[a][j];  // note_top1 just took the argmax
      continue;
    }
    const auto cpu = lj.to(torch::kCPU);
    for (size_t i = 0; i < pos.size(); ++i)
      s.token[pos[i]] = pick_from_logits(cpu[static_cast<int64_t>(i)], o, uniform01(s.row_seeds[pos[i]] ^ kSamplerStream));
  }
}

// Appends each row's token to its context and result, and returns the rows that go on.
std::vector<int64_t> record_and_retire(const Models& m, Batch& b, const Step& s, const DecodeOptions& o,
                                       std::vector<DecodeResult>& results) {
  std::vector<int64_t> still;
  for (size_t a = 0; a < b.active.size(); ++a) {
    const int64_t r = b.active[a];
    DecodeResult& res = results[b.examples[r]];
    TokenTrace tr;
    tr.id = s.token[a];
    tr.text = m.base.tokenizer().decode({s.token[a]});
    tr.source = s.source[a];
    if (o.trace_probs) {
      const int64_t models = s.z.size(1);  // s.z is a contiguous CPU float tensor (checked_policy_probs)
      const float* zr = s.z.data_ptr<float>() + static_cast<int64_t>(a) * models;
      tr.probs.assign(zr, zr + models);
    }
    tr.top1 = s.top1[a];
    res.ids.push_back(tr.id);
    res.n_deferred += tr.source != 0;
    res.trace.push_back(std::move(tr));
    b.context[r].push_back(s.token[a]);
    if (o.on_token) o.on_token(b.examples[r], res.trace.back(), res.ids);

    res.stop_reason = finish_reason(m, o, b, r, res);
    if (res.stop_reason.empty()) {
      still.push_back(r);
    } else {
      res.output = final_output(m, o, res);
      res.latency_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - b.start[r]).count();
    }
  }
  return still;
}

// ---------------------------------------------------------------------------------------------
// Per-row model outputs collected from several extend() calls (the rows that went on, the rows that
// just read their prompts), put into the order of Batch::active when a step needs them.
struct RowOutputs {
  std::vector<int64_t> rows;
  torch::Tensor logits, hidden;  // [rows.size(), V] and [rows.size(), d]

  void append(const std::vector<int64_t>& more, const torch::Tensor& l, const torch::Tensor& h) {
    if (rows.empty()) {
      rows = more, logits = l, hidden = h;
      return;
    }
    rows.insert(rows.end(), more.begin(), more.end());
    logits = torch::cat({logits, l});
    hidden = torch::cat({hidden, h});
  }
  // Reorders to `order`, a permutation of `rows` (the common case, the same order, copies nothing).
  void arrange(const std::vector<int64_t>& order) {
    if (order == rows) return;
    std::vector<int64_t> at(order.size());
    for (size_t i = 0; i < order.size(); ++i) {
      const auto it = std::find(rows.begin(), rows.end(), order[i]);
      COLM_CHECK(it != rows.end(), "[decode] internal: no model output for row " << order[i]);
      at[i] = it - rows.begin();
    }
    const auto index = torch::tensor(at, torch::kLong).to(logits.device());
    logits = logits.index_select(0, index);
    hidden = hidden.index_select(0, index.to(hidden.device()));
    rows = order;
  }
};

// The Co-LLM step for the active rows. At position t every active row asks the policy for
// P(Z_t = j | x_<t) over {base, assistants}; if 1 - P(Z_t = 0) > eta the assistant with the highest
// P(Z_t = j) emits the token, otherwise the base does; the token is appended to the row's context
// for every model (the base reads it at once, an assistant when next consulted).
class CollaborativeRows {
 public:
  CollaborativeRows(Models& m, DeferralPolicy& policy, const DecodeOptions& o, const std::vector<uint64_t>& seeds)
      : m_(m), policy_(policy), o_(o), seeds_(seeds) {}

  void begin(int64_t rows) {
    base_state_ = m_.base.new_state(rows);
    for (Expert* a : m_.assistants) caches_.emplace_back(*a, rows, m_.vocab, m_.device);
  }

  // New examples entered `rows`: every model forgets the rows' old sequences; the base reads the
  // prompts now, an assistant only when first consulted.
  void admit(const Batch& b, const std::vector<int64_t>& rows) {
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t r : rows) {
      base_state_->reset(r);
      for (auto& c : caches_) c.reset(r);
      prompts.push_back(b.context[r]);
    }
    const ExpertOutput out = m_.base.extend(*base_state_, rows, prompts);
    base_.append(rows, usable_logits(out.logits, m_.vocab, m_.device), out.hidden);
  }

  Step step(Batch& b, const std::vector<DecodeResult>& results) {
    const int64_t A = static_cast<int64_t>(b.active.size()), M = static_cast<int64_t>(m_.assistants.size());
    const bool mixture = o_.strategy == "mixture";
    base_.arrange(b.active);
    const torch::Tensor& base_logits = base_.logits;  // [A, V]
    const PolicyNeeds needs = policy_.needs();        // asked every step: a policy may change its mind
    COLM_CHECK(!needs.gold, "[decode] this deferral policy needs the gold next token (an oracle): use it in "
                            "teacher_forced_trace, not for generation");
    Step s;
    s.source.assign(A, 0);
    s.token.assign(A, -1);
    s.top1.assign(A, std::vector<int64_t>(M + 1, -1));
    note_top1(s, 0, base_logits, iota(A));

    // 1. z = P(Z_t = j | x_<t): [A, M+1]. Assistants run here only if the policy or the mixture needs them.
    std::vector<torch::Tensor> assistant_logits(M);  // [A, V] each, or undefined
    if (needs.assistant_logits || mixture)
      for (int64_t j = 0; j < M; ++j) {
        assistant_logits[j] = caches_[j].logits(b.active, b.context);
        note_top1(s, j + 1, assistant_logits[j], iota(A));
      }
    PolicyInput in;
    if (needs.base_hidden) in.base_hidden = base_.hidden.to(m_.device, torch::kFloat32);  // [A, d]
    if (needs.base_logits) in.base_logits = base_logits;                                  // [A, V]
    if (needs.assistant_logits) in.assistant_logits = assistant_logits;                   // M x [A, V]
    for (int64_t r : b.active)
      in.row_seeds.push_back(decode_row_seed(o_.seed, seeds_[b.examples[r]], next_position(b, r, results)));
    s.row_seeds = in.row_seeds;
    s.z = checked_policy_probs(policy_.probs(in), A, M + 1);

    // 2. Who emits x_t, and which token.
    if (mixture) {
      emit_mixture(s, base_logits, assistant_logits, o_);
    } else {
      const auto defer = ((1 - s.z.select(1, 0)) > o_.threshold).to(torch::kLong);                   // [A]
      const auto best = M > 0 ? s.z.narrow(1, 1, M).argmax(1) + 1 : torch::zeros({A}, torch::kLong);  // [A]
      const auto who = (defer * best).contiguous();                                                  // [A]: 0 = base
      const auto* w = who.data_ptr<int64_t>();
      for (int64_t a = 0; a < A; ++a) s.source[a] = static_cast<int>(w[a]);
      emit_deferred(s, m_, b, caches_, base_logits, assistant_logits, o_);
    }
    return s;
  }

  // The rows that go on read their new token (the base only; assistants catch up lazily).
  void advance(const Batch& b, const std::vector<int64_t>& rows) {
    base_ = RowOutputs{};
    if (rows.empty()) return;
    std::vector<std::vector<int64_t>> next;
    for (int64_t r : rows) next.push_back({b.context[r].back()});
    const ExpertOutput out = m_.base.extend(*base_state_, rows, next);
    base_.append(rows, usable_logits(out.logits, m_.vocab, m_.device), out.hidden);
  }

 private:
  Models& m_;
  DeferralPolicy& policy_;
  const DecodeOptions& o_;
  const std::vector<uint64_t>& seeds_;
  std::unique_ptr<DecodeState> base_state_;
  std::vector<LazyCache> caches_;
  RowOutputs base_;  // the base's output at the end of each active row's context
};

void check_options(const DecodeOptions& o) {
  COLM_CHECK(o.strategy == "defer" || o.strategy == "mixture",
             "[decode] unknown strategy '" << o.strategy << "' (expected \"defer\" or \"mixture\")");
  COLM_CHECK(o.batch_size >= 1, "[decode] batch_size must be >= 1, got " << o.batch_size);
  COLM_CHECK(o.max_tokens >= 1, "[decode] max_tokens must be >= 1, got " << o.max_tokens);
  COLM_CHECK(std::isfinite(o.threshold), "[decode] threshold must be a finite number");
  if (o.sample) {
    COLM_CHECK(o.temperature > 0 && std::isfinite(o.temperature),
               "[decode] temperature must be > 0 when sampling, got " << o.temperature);
    COLM_CHECK(o.top_p > 0 && o.top_p <= 1, "[decode] top_p must be in (0, 1], got " << o.top_p);
  }
}

Models resolve_models(Expert& base, const std::vector<Expert*>& assistants) {
  Models m{base, assistants, base.tokenizer().vocab_size(), base.info().max_positions, base.tokenizer().eos_id(),
           base.device()};
  COLM_CHECK(m.vocab > 0, "[decode] the base's tokenizer has an empty vocabulary");
  COLM_CHECK(base.info().vocab_size >= m.vocab, "[decode] the base (" << base.info().source << ") has "
                                                    << base.info().vocab_size << " output rows but its tokenizer has "
                                                    << m.vocab << " tokens");
  for (size_t j = 0; j < assistants.size(); ++j) {
    COLM_CHECK(assistants[j] != nullptr, "[decode] assistant " << j + 1 << " is null");
    const auto info = assistants[j]->info();
    COLM_CHECK(info.vocab_size >= m.vocab, "[decode] assistant " << j + 1 << " (" << info.source << ") has "
                                                                 << info.vocab_size << " output rows, fewer than the "
                                                                 << m.vocab << " tokens of the base's tokenizer");
    if (info.max_positions > 0) m.max_positions = m.max_positions > 0 ? std::min(m.max_positions, info.max_positions)
                                                                      : info.max_positions;
  }
  if (m.max_positions <= 0) m.max_positions = std::numeric_limits<int64_t>::max();
  return m;
}

// Hands out the prompts in order, each encoded with the base's tokenizer and checked when it enters a row.
class PromptQueue {
 public:
  PromptQueue(const Models& m, const std::vector<std::string>& prompts, const DecodeOptions& o)
      : m_(m), prompts_(prompts), o_(o) {}

  // Puts the next waiting prompts into the free rows; returns the rows filled (ascending).
  std::vector<int64_t> fill(Batch& b) {
    std::vector<int64_t> filled;
    const int64_t n = static_cast<int64_t>(prompts_.size());
    for (int64_t r = 0; r < static_cast<int64_t>(b.examples.size()) && next_ < n; ++r) {
      if (b.examples[r] >= 0) continue;
      const int64_t i = next_++;
      auto ids = m_.base.tokenizer().encode(prompts_[i], o_.add_special_tokens);
      COLM_CHECK(!ids.empty(), "[decode] prompt " << i << " encodes to no tokens (an empty prompt needs a BOS "
                                                  "token: set add_special_tokens with a tokenizer that has one)");
      COLM_CHECK(static_cast<int64_t>(ids.size()) <= m_.max_positions,
                 "[decode] prompt " << i << " has " << ids.size() << " tokens; the models accept at most "
                                    << m_.max_positions);
      b.examples[r] = i;
      b.context[r] = std::move(ids);
      b.start[r] = std::chrono::steady_clock::now();
      filled.push_back(r);
    }
    return filled;
  }

 private:
  const Models& m_;
  const std::vector<std::string>& prompts_;
  const DecodeOptions& o_;
  int64_t next_ = 0;
};

// Decodes every prompt on options.batch_size rows with continuous batching. `rows` holds the models'
// states: begin(n_rows); admit(batch, rows) when new examples enter rows; step(batch, results) -> the
// Step of the active rows; advance(batch, rows) when rows go on with their new token.
template <class Rows>
std::vector<DecodeResult> decode_continuously(const Models& m, const std::vector<std::string>& prompts,
                                              const DecodeOptions& o, Rows& rows) {
  std::vector<DecodeResult> results(prompts.size());
  const int64_t n = static_cast<int64_t>(prompts.size());
  if (n == 0) return results;
  const int64_t slots = std::min(o.batch_size, n);
  Batch b;
  b.examples.assign(slots, -1);
  b.context.resize(slots);
  b.start.resize(slots);
  PromptQueue queue(m, prompts, o);
  rows.begin(slots);
  b.active = queue.fill(b);
  rows.admit(b, b.active);
  int64_t done = 0;
  while (!b.active.empty()) {
    const Step s = rows.step(b, results);
    const auto still = record_and_retire(m, b, s, o, results);
    if (still.size() < b.active.size()) {
      // Finished rows hand over their results and become free.
      int64_t tokens = 0;
      for (int64_t r : b.active) {
        if (std::binary_search(still.begin(), still.end(), r)) continue;
        const int64_t ex = b.examples[r];
        tokens += static_cast<int64_t>(results[ex].ids.size());
        ++done;
        if (o.on_result) o.on_result(ex, results[ex]);
        b.examples[r] = -1;
        b.context[r].clear();
      }
      if (o.on_finished) o.on_finished(done, tokens);
    }
    rows.advance(b, still);
    const auto fresh = queue.fill(b);
    if (!fresh.empty()) rows.admit(b, fresh);
    b.active.clear();
    std::merge(still.begin(), still.end(), fresh.begin(), fresh.end(), std::back_inserter(b.active));
  }
  return results;
}

std::vector<uint64_t> seeds_for(const std::vector<uint64_t>& example_seeds, size_t n) {
  COLM_CHECK(example_seeds.empty() || example_seeds.size() == n,
             "[decode] " << example_seeds.size() << " example seeds for " << n << " prompts");
  std::vector<uint64_t> seeds = example_seeds;
  for (size_t i = seeds.size(); i < n; ++i) seeds.push_back(i);
  return seeds;
}

// A combination: every model reads every token (its own cache); at each step the combined scores of
// their last-position logits pick the token.
class CombinedRows {
 public:
  CombinedRows(Models& m, const CombineOptions& c, const DecodeOptions& o, const std::vector<uint64_t>& seeds)
      : m_(m), c_(c), o_(o), seeds_(seeds) {
    models_.push_back(&m.base);
    models_.insert(models_.end(), m.assistants.begin(), m.assistants.end());
  }

  void begin(int64_t rows) {
    for (Expert* e : models_) caches_.emplace_back(*e, rows, m_.vocab, m_.device);
  }
  void admit(const Batch&, const std::vector<int64_t>& rows) {
    for (int64_t r : rows)
      for (auto& c : caches_) c.reset(r);
  }
  void advance(const Batch&, const std::vector<int64_t>&) {}

  Step step(Batch& b, const std::vector<DecodeResult>& results) {
    const int64_t A = static_cast<int64_t>(b.active.size()), K = static_cast<int64_t>(models_.size());
    Step s;
    s.source.assign(A, 0);
    s.token.assign(A, -1);
    s.top1.assign(A, std::vector<int64_t>(K, -1));
    std::vector<torch::Tensor> logits;  // K x [A, V]
    for (int64_t k = 0; k < K; ++k) {
      logits.push_back(caches_[k].logits(b.active, b.context));
      note_top1(s, k, logits.back(), iota(A));
    }
    const auto scores = combined_scores(logits, c_).to(torch::kCPU);  // [A, V]
    s.z = torch::zeros({A, 2});
    for (int64_t a = 0; a < A; ++a) {
      const int64_t r = b.active[a];
      s.row_seeds.push_back(decode_row_seed(o_.seed, seeds_[b.examples[r]], next_position(b, r, results)));
      s.token[a] = pick_from_logits(scores[a], o_, uniform01(s.row_seeds[a] ^ kSamplerStream));
      s.source[a] = s.token[a] == s.top1[a][0] ? 0 : 1;  // 1: the combination overrode models[0]'s own choice
      s.z[a][s.source[a]] = 1.0f;
    }
    return s;
  }

 private:
  Models& m_;
  const CombineOptions& c_;
  const DecodeOptions& o_;
  const std::vector<uint64_t>& seeds_;
  std::vector<Expert*> models_;
  std::vector<LazyCache> caches_;
};

// The policy used by decode_single: one model, always itself.
class AlwaysBase final : public DeferralPolicy {
 public:
  PolicyNeeds needs() const override { return {}; }
  torch::Tensor probs(const PolicyInput& in) override {
    return torch::ones({static_cast<int64_t>(in.row_seeds.size()), 1});
  }
};

}  // namespace

uint64_t decode_row_seed(uint64_t run_seed, uint64_t example_seed, int64_t position) {
  return mix_seed(mix_seed(run_seed, example_seed), static_cast<uint64_t>(position));
}

std::vector<DecodeResult> collaborative_decode(Expert& base, const std::vector<Expert*>& assistants,
                                               DeferralPolicy& policy, const std::vector<std::string>& prompts,
                                               const std::vector<uint64_t>& example_seeds,
                                               const DecodeOptions& options) {
  torch::NoGradGuard no_grad;
  check_options(options);
  Models m = resolve_models(base, assistants);
  const auto seeds = seeds_for(example_seeds, prompts.size());
  CollaborativeRows rows(m, policy, options, seeds);
  return decode_continuously(m, prompts, options, rows);
}

torch::Tensor combined_scores(const std::vector<torch::Tensor>& logits, const CombineOptions& c) {
  if (c.strategy == "contrastive") {
    COLM_CHECK(logits.size() == 2, "[decode] contrastive decoding needs 2 models (expert, amateur), got " << logits.size());
    const auto lp_e = torch::log_softmax(logits[0].to(torch::kFloat32), -1);  // [R, V]
    const auto lp_a = torch::log_softmax(logits[1].to(torch::kFloat32), -1);  // [R, V]
    const auto cutoff = std::get<0>(lp_e.max(-1, /*keepdim=*/true)) + std::log(c.alpha);  // [R, 1]
    return (lp_e - c.beta * lp_a).masked_fill(lp_e < cutoff, -std::numeric_limits<float>::infinity());
  }
  COLM_CHECK(c.strategy == "proxy", "[decode] unknown combination '" << c.strategy << "' (contrastive or proxy)");
  COLM_CHECK(logits.size() == 3, "[decode] proxy tuning needs 3 models (large, tuned, untuned), got " << logits.size());
  return logits[0].to(torch::kFloat32) + (logits[1].to(torch::kFloat32) - logits[2].to(torch::kFloat32));
}

std::vector<DecodeResult> combined_decode(const std::vector<Expert*>& models, const CombineOptions& combine,
                                          const std::vector<std::string>& prompts,
                                          const std::vector<uint64_t>& example_seeds, const DecodeOptions& options) {
  torch::NoGradGuard no_grad;
  check_options(options);
  const size_t want = combine.strategy == "contrastive" ? 2 : combine.strategy == "proxy" ? 3 : 0;
  COLM_CHECK(want > 0, "[decode] unknown combination '" << combine.strategy << "' (contrastive or proxy)");
  COLM_CHECK(models.size() == want, "[decode] " << combine.strategy << " needs " << want << " models, got "
                                                << models.size());
  COLM_CHECK(combine.alpha >= 0 && combine.alpha <= 1, "[decode] contrastive alpha must be in [0, 1]");
  COLM_CHECK(combine.beta >= 0 && std::isfinite(combine.beta), "[decode] contrastive beta must be finite and >= 0");
  for (size_t k = 0; k < models.size(); ++k) COLM_CHECK(models[k] != nullptr, "[decode] model " << k << " is null");
  for (size_t k = 1; k < models.size(); ++k)
    COLM_CHECK(models[k]->tokenizer().fingerprint() == models[0]->tokenizer().fingerprint(),
               "[decode] " << combine.strategy << ": model " << k + 1 << " (" << models[k]->info().source
                           << ") uses another tokenizer than model 1 (" << models[0]->info().source
                           << "); combining logits needs one shared vocabulary");
  Models m = resolve_models(*models[0], {models.begin() + 1, models.end()});
  const auto seeds = seeds_for(example_seeds, prompts.size());
  CombinedRows rows(m, combine, options, seeds);
  return decode_continuously(m, prompts, options, rows);
}

std::vector<DecodeResult> decode_single(Expert& model, const std::vector<std::string>& prompts,
                                        const std::vector<uint64_t>& example_seeds, const DecodeOptions& options) {
  AlwaysBase policy;
  return collaborative_decode(model, {}, policy, prompts, example_seeds, options);
}

TeacherForcedTrace teacher_forced_trace(Expert& base, const std::vector<Expert*>& assistants,
                                        DeferralPolicy& policy, const std::vector<int64_t>& prompt_ids,
                                        const std::vector<int64_t>& target_ids, uint64_t seed) {
  return teacher_forced_traces(base, assistants, policy, {TeacherForcedExample{prompt_ids, target_ids, seed}}, 1)
      .front();
}

std::vector<TeacherForcedTrace> teacher_forced_traces(Expert& base, const std::vector<Expert*>& assistants,
                                                      DeferralPolicy& policy,
                                                      const std::vector<TeacherForcedExample>& examples,
                                                      int64_t batch_size) {
  torch::NoGradGuard no_grad;
  COLM_CHECK(batch_size >= 1, "[decode] teacher_forced_traces: batch_size must be >= 1, got " << batch_size);
  Models m = resolve_models(base, assistants);
  const int64_t M = static_cast<int64_t>(assistants.size());
  for (const auto& ex : examples) {
    const int64_t P = static_cast<int64_t>(ex.prompt_ids.size()), T = static_cast<int64_t>(ex.target_ids.size());
    COLM_CHECK(P >= 1, "[decode] teacher_forced_trace needs a non-empty prompt");
    COLM_CHECK(T >= 1, "[decode] teacher_forced_trace needs a non-empty target");
    COLM_CHECK(P + T - 1 <= m.max_positions, "[decode] prompt + target has " << P + T << " tokens; the models accept "
                                                                             << m.max_positions);
    for (int64_t id : ex.target_ids)
      COLM_CHECK(id >= 0 && id < m.vocab, "[decode] target token " << id << " is outside the vocabulary (" << m.vocab << ")");
  }
  std::vector<TeacherForcedTrace> traces;
  const int64_t n = static_cast<int64_t>(examples.size());
  for (int64_t first = 0; first < n; first += batch_size) {
    const int64_t B = std::min(batch_size, n - first);
    // Row i of the batch: prompt + target[:-1], right-padded to the longest; the state before
    // target[t] is the model's output at position P-1+t.
    std::vector<int64_t> P(B), T(B);
    int64_t S = 0;
    for (int64_t i = 0; i < B; ++i) {
      const auto& ex = examples[first + i];
      P[i] = static_cast<int64_t>(ex.prompt_ids.size());
      T[i] = static_cast<int64_t>(ex.target_ids.size());
      S = std::max(S, P[i] + T[i] - 1);
    }
    auto ids = torch::zeros({B, S}, torch::kLong), mask = torch::zeros({B, S}, torch::kLong);
    for (int64_t i = 0; i < B; ++i) {
      const auto& ex = examples[first + i];
      std::vector<int64_t> seq(ex.prompt_ids);
      seq.insert(seq.end(), ex.target_ids.begin(), ex.target_ids.end() - 1);
      ids[i].narrow(0, 0, P[i] + T[i] - 1).copy_(torch::tensor(seq, torch::kLong));
      mask[i].narrow(0, 0, P[i] + T[i] - 1).fill_(1);
    }
    // A model's outputs before each target token, the batch's examples one after the other: [sum T, .].
    const bool padded = mask.min().item<int64_t>() == 0;  // rows of different lengths: hide the padding
    auto run = [&](Expert& e) {
      auto out = e.forward(ids.to(e.device()), padded ? mask.to(e.device()) : torch::Tensor());
      std::vector<torch::Tensor> logits, hidden;
      for (int64_t i = 0; i < B; ++i) {
        logits.push_back(usable_logits(out.logits[i].narrow(0, P[i] - 1, T[i]), m.vocab, m.device));  // [T_i, V]
        hidden.push_back(out.hidden[i].narrow(0, P[i] - 1, T[i]).to(m.device, torch::kFloat32));      // [T_i, d]
      }
      return ExpertOutput{torch::cat(logits), torch::cat(hidden)};
    };
    const ExpertOutput b = run(base);
    std::vector<torch::Tensor> a_logits;
    for (Expert* a : assistants) a_logits.push_back(run(*a).logits);

    const PolicyNeeds needs = policy.needs();
    PolicyInput in;
    if (needs.base_hidden) in.base_hidden = b.hidden;
    if (needs.base_logits) in.base_logits = b.logits;
    if (needs.assistant_logits) in.assistant_logits = a_logits;
    std::vector<int64_t> gold;
    for (int64_t i = 0; i < B; ++i) {
      const auto& ex = examples[first + i];
      gold.insert(gold.end(), ex.target_ids.begin(), ex.target_ids.end());
      for (int64_t t = 0; t < T[i]; ++t) in.row_seeds.push_back(decode_row_seed(0, ex.seed, t));
    }
    const int64_t rows = static_cast<int64_t>(gold.size());
    in.gold = torch::tensor(gold, torch::kLong).to(m.device);
    const auto probs = checked_policy_probs(policy.probs(in), rows, M + 1);
    std::vector<torch::Tensor> top1{b.logits.argmax(1)};
    for (const auto& l : a_logits) top1.push_back(l.argmax(1));
    const auto top1_all = torch::stack(top1, 1).to(torch::kCPU);  // [rows, M+1]
    const auto gold_all = in.gold.to(torch::kCPU);
    int64_t at = 0;
    for (int64_t i = 0; i < B; ++i) {
      TeacherForcedTrace tr;
      tr.probs = probs.narrow(0, at, T[i]).contiguous();
      tr.top1 = top1_all.narrow(0, at, T[i]).contiguous();
      tr.gold = gold_all.narrow(0, at, T[i]).contiguous();
      traces.push_back(std::move(tr));
      at += T[i];
    }
  }
  return traces;
}

}  // namespace colm
