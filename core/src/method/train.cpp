// The training loop and its data: batching, AdamW with warm-up/decay, clipping, accumulation,
// validation, atomic checkpoints and exact resume; the lm and deferral objectives over experts.
#include "method/train.hpp"
#include "method/distributed.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "colm/hash.hpp"
#include "base/progress.hpp"
#include "method/scoring.hpp"

namespace fs = std::filesystem;

namespace colm {

TrainObjective::~TrainObjective() = default;

// ---------------------------------------------------------------- config

void validate(const TrainConfig& c) {
  COLM_CHECK(c.steps >= 1, "train: steps must be >= 1, got " << c.steps);
  COLM_CHECK(c.batch_size >= 1, "train: batch_size must be >= 1, got " << c.batch_size);
  COLM_CHECK(c.grad_accum >= 1, "train: grad_accum must be >= 1, got " << c.grad_accum);
  COLM_CHECK(c.lr > 0 && std::isfinite(c.lr), "train: lr must be > 0, got " << c.lr);
  COLM_CHECK(c.weight_decay >= 0, "train: weight_decay must be >= 0, got " << c.weight_decay);
  COLM_CHECK(c.warmup >= 0, "train: warmup must be >= 0, got " << c.warmup);
  COLM_CHECK(c.schedule == "linear" || c.schedule == "cosine" || c.schedule == "constant",
             "train: schedule must be linear, cosine or constant, got '" << c.schedule << "'");
  COLM_CHECK(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1, "train: min_lr_ratio must be in [0, 1], got " << c.min_lr_ratio);
  COLM_CHECK(c.eval_every >= 0 && c.checkpoint_every >= 0, "train: eval_every and checkpoint_every must be >= 0");
  COLM_CHECK(c.max_len >= 2, "train: max_len must be >= 2, got " << c.max_len);
}

double learning_rate_at(const TrainConfig& c, int64_t step) {
  if (step < c.warmup) return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup);
  if (c.schedule == "constant") return c.lr;
  const int64_t decay_steps = std::max<int64_t>(1, c.steps - c.warmup);
  const double p = std::min(1.0, static_cast<double>(step - c.warmup) / static_cast<double>(decay_steps));
  const double shape = c.schedule == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * p)) : 1.0 - p;
  return c.lr * (c.min_lr_ratio + (1.0 - c.min_lr_ratio) * shape);
}

// ---------------------------------------------------------------- data

int64_t TrainData::target_tokens() const {
  int64_t n = 0;
  for (const auto& m : loss_mask) n += std::count(m.begin(), m.end(), uint8_t{1});
  return n;
}

int64_t TrainData::max_length() const {
  size_t n = 0;
  for (const auto& s : ids) n = std::max(n, s.size());
  return static_cast<int64_t>(n);
}

void TrainData::validate(const std::string& what) const {
  COLM_CHECK(ids.size() == loss_mask.size(), what << ": " << ids.size() << " sequences but " << loss_mask.size()
                                                  << " loss masks");
  COLM_CHECK(!ids.empty(), what << ": no sequences");
  for (size_t i = 0; i < ids.size(); ++i) {
    COLM_CHECK(!ids[i].empty(), what << ": sequence " << i << " is empty");
    COLM_CHECK(ids[i].size() == loss_mask[i].size(), what << ": sequence " << i << " has " << ids[i].size()
                                                          << " tokens but a loss mask of " << loss_mask[i].size());
    COLM_CHECK(loss_mask[i][0] == 0, what << ": sequence " << i << " has a target at position 0 (nothing predicts it)");
    for (auto m : loss_mask[i]) COLM_CHECK(m <= 1, what << ": sequence " << i << " has a loss mask value " << int(m));
  }
}

std::string TrainData::hash() const {
  Hasher h;
  h.add("train-data-v1").add(static_cast<int64_t>(ids.size()));
  for (size_t i = 0; i < ids.size(); ++i) {
    h.add(std::string(reinterpret_cast<const char*>(ids[i].data()), ids[i].size() * sizeof(int64_t)));
    h.add(std::string(reinterpret_cast<const char*>(loss_mask[i].data()), loss_mask[i].size()));
  }
  return h.hex();
}

size_t prompt_token_count(const Tokenizer& tok, const std::string& prompt, const std::vector<int64_t>& joint) {
  if (prompt.empty()) return 0;
  const auto alone = tok.encode(prompt);
  const std::string text = tok.decode(alone);
  auto fits = [&](size_t k) {
    const auto t = tok.decode(std::vector<int64_t>(joint.begin(), joint.begin() + long(k)));
    return t.size() <= text.size() && text.compare(0, t.size(), t) == 0;
  };
  // Start where the prompt alone ends (the usual answer) and move by single tokens: a few decodes.
  size_t k = std::min(alone.size(), joint.size());
  if (fits(k)) {
    while (k < joint.size() && fits(k + 1)) ++k;
  } else {
    while (k > 0 && !fits(k)) --k;
  }
  return k;
}

TrainData make_pair_data(const std::vector<std::pair<std::string, std::string>>& pairs, const Tokenizer& tok,
                         int64_t max_len, bool add_bos, bool add_eos) {
  COLM_CHECK(max_len >= 2, "make_pair_data: max_len must be >= 2, got " << max_len);
  TrainData d;
  int64_t truncated = 0, dropped = 0;
  for (const auto& [prompt, target] : pairs) {
    std::vector<int64_t> ids;
    std::vector<uint8_t> mask;
    if (add_bos && tok.bos_id()) {
      ids.push_back(*tok.bos_id());
      mask.push_back(0);
    }
    const auto joint = tok.encode(prompt + target);
    const size_t k = prompt_token_count(tok, prompt, joint);
    for (size_t i = 0; i < joint.size(); ++i) ids.push_back(joint[i]), mask.push_back(i < k ? 0 : 1);
    if (add_eos && tok.eos_id()) ids.push_back(*tok.eos_id()), mask.push_back(1);
    mask[0] = 0;  // an empty prompt without BOS: the first target has no context
    if (static_cast<int64_t>(ids.size()) > max_len) {
      ++truncated;
      ids.resize(static_cast<size_t>(max_len));
      mask.resize(static_cast<size_t>(max_len));
    }
    if (std::count(mask.begin(), mask.end(), uint8_t{1}) == 0) {
      ++dropped;
      continue;
    }
    d.ids.push_back(std::move(ids));
    d.loss_mask.push_back(std::move(mask));
  }
  if (truncated) spdlog::warn("[train] {} of {} examples longer than max_len {} were truncated", truncated, pairs.size(), max_len);
  if (dropped) spdlog::warn("[train] {} examples had no target token within max_len {} and were dropped", dropped, max_len);
  return d;
}

TrainData make_text_data(const std::vector<std::string>& files, const Tokenizer& tok, int64_t max_len) {
  COLM_CHECK(max_len >= 2, "make_text_data: max_len must be >= 2, got " << max_len);
  COLM_CHECK(!files.empty(), "make_text_data: no text files given");
  std::vector<int64_t> stream;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    COLM_CHECK(in, "training text '" << f << "' cannot be read (missing or no permission)");
    std::stringstream ss;
    ss << in.rdbuf();
    if (tok.bos_id()) stream.push_back(*tok.bos_id());
    for (auto t : tok.encode(ss.str())) stream.push_back(t);
    if (tok.eos_id()) stream.push_back(*tok.eos_id());
  }
  TrainData d;
  for (size_t at = 0; at + 1 < stream.size(); at += static_cast<size_t>(max_len)) {
    const size_t end = std::min(stream.size(), at + static_cast<size_t>(max_len));
    if (end - at < 2) break;  // a one-token tail predicts nothing
    d.ids.emplace_back(stream.begin() + static_cast<long>(at), stream.begin() + static_cast<long>(end));
    d.loss_mask.emplace_back(end - at, uint8_t{1});
    d.loss_mask.back()[0] = 0;
  }
  COLM_CHECK(!d.ids.empty(), "make_text_data: the text files hold fewer than 2 tokens");
  return d;
}

std::pair<TrainData, TrainData> split_data(const TrainData& data, double valid_fraction, uint64_t seed) {
  COLM_CHECK(valid_fraction >= 0 && valid_fraction < 1, "split_data: valid_fraction must be in [0, 1), got " << valid_fraction);
  std::vector<size_t> order(data.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937_64 rng(seed ^ 0x5b1d5b1dULL);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  size_t n_valid = static_cast<size_t>(std::llround(valid_fraction * static_cast<double>(data.size())));
  if (valid_fraction > 0 && n_valid == 0 && data.size() >= 2) n_valid = 1;
  std::vector<size_t> valid(order.begin(), order.begin() + static_cast<long>(n_valid));
  std::vector<size_t> train(order.begin() + static_cast<long>(n_valid), order.end());
  // Keep the original order inside each part (stable, readable).
  std::sort(valid.begin(), valid.end());
  std::sort(train.begin(), train.end());
  std::pair<TrainData, TrainData> out;
  for (auto i : train) out.first.ids.push_back(data.ids[i]), out.first.loss_mask.push_back(data.loss_mask[i]);
  for (auto i : valid) out.second.ids.push_back(data.ids[i]), out.second.loss_mask.push_back(data.loss_mask[i]);
  return out;
}

Batch make_batch(const TrainData& data, const std::vector<int64_t>& rows, int64_t pad_id, torch::Device device) {
  COLM_CHECK(!rows.empty(), "make_batch: no rows");
  int64_t T = 0;
  for (auto r : rows) {
    COLM_CHECK(r >= 0 && r < static_cast<int64_t>(data.size()), "make_batch: row " << r << " out of range");
    T = std::max<int64_t>(T, static_cast<int64_t>(data.ids[static_cast<size_t>(r)].size()));
  }
  const auto B = static_cast<int64_t>(rows.size());
  auto ids = torch::full({B, T}, pad_id, torch::kInt64);
  auto attn = torch::zeros({B, T}, torch::kInt64);
  auto loss = torch::zeros({B, T}, torch::kBool);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto attn_a = attn.accessor<int64_t, 2>();
  auto loss_a = loss.accessor<bool, 2>();
  Batch b;
  for (int64_t i = 0; i < B; ++i) {
    const auto& s = data.ids[static_cast<size_t>(rows[static_cast<size_t>(i)])];
    const auto& m = data.loss_mask[static_cast<size_t>(rows[static_cast<size_t>(i)])];
    for (size_t t = 0; t < s.size(); ++t) {
      ids_a[i][static_cast<int64_t>(t)] = s[t];
      attn_a[i][static_cast<int64_t>(t)] = 1;
      loss_a[i][static_cast<int64_t>(t)] = m[t] != 0;
      b.target_tokens += m[t];
    }
  }
  b.ids = ids.to(device);
  b.attn_mask = attn.to(device);
  b.loss_mask = loss.to(device);
  b.rows = rows;
  return b;
}

// ---------------------------------------------------------------- data order

namespace {

// Sequence order of one epoch: a pure function of (seed, epoch), so a resumed run only needs to know
// where it was, never a generator's internal state.
std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch, size_t n) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 1);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);  // Fisher-Yates, portable
  return order;
}

struct DataCursor {
  int64_t epoch = 0, offset = 0;
  std::vector<int64_t> take(uint64_t seed, size_t n_data, int64_t count, std::vector<int64_t>& cached_order,
                            int64_t& cached_epoch) {
    std::vector<int64_t> rows;
    while (static_cast<int64_t>(rows.size()) < count) {
      if (cached_epoch != epoch) {
        cached_order = epoch_order(seed, epoch, n_data);
        cached_epoch = epoch;
      }
      rows.push_back(cached_order[static_cast<size_t>(offset)]);
      if (++offset == static_cast<int64_t>(n_data)) offset = 0, ++epoch;
    }
    return rows;
  }
};

// ---------------------------------------------------------------- checkpoints

constexpr const char* kLatest = "latest";

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::string config_identity(const TrainConfig& c, const std::string& objective, const std::string& data_hash) {
  // Everything that changes the numbers; not checkpoint/eval cadence or logging.
  Hasher h;
  h.add("train-run-v1").add(objective).add(data_hash).add(c.steps).add(c.batch_size).add(c.grad_accum).add(c.lr);
  h.add(c.weight_decay).add(c.beta1).add(c.beta2).add(c.adam_eps).add(c.warmup).add(c.schedule).add(c.min_lr_ratio);
  h.add(c.clip).add(static_cast<int64_t>(c.seed));
  if (!c.f32_master) h.add("no-f32-master");  // (the default keeps older checkpoints' identity)
  return h.hex();
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    COLM_CHECK(out, "cannot write '" << tmp << "'");
    out << text;
    out.flush();
    COLM_CHECK(out, "cannot write '" << tmp << "' (disk full?)");
  }
  fs::rename(tmp, path);
}

struct RunState {
  int64_t step = 0;
  DataCursor cursor;
};

void save_checkpoint(const fs::path& root, const RunState& st, TrainObjective& objective, torch::optim::AdamW& opt,
                     const std::string& identity, const std::vector<torch::Tensor>& masters) {
  fs::create_directories(root);
  const auto final_dir = root / step_dir_name(st.step);
  const auto tmp_dir = root / (step_dir_name(st.step) + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir / "artifacts");

  torch::serialize::OutputArchive params;
  const auto ps = objective.parameters();
  for (size_t i = 0; i < ps.size(); ++i) params.write("p" + std::to_string(i), ps[i].detach().cpu());
  // The f32 master copies of low-precision parameters: resuming from the rounded weights alone
  // would lose the updates still below their precision.
  for (size_t i = 0; i < masters.size(); ++i)
    if (masters[i].defined()) params.write("m" + std::to_string(i), masters[i].detach().cpu());
  params.save_to((tmp_dir / "params.pt").string());

  torch::serialize::OutputArchive optim;
  opt.save(optim);
  optim.save_to((tmp_dir / "optimizer.pt").string());

  torch::serialize::OutputArchive rng;
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    rng.write("cpu_generator", gen.get_state());
  }
  rng.save_to((tmp_dir / "rng.pt").string());

  objective.save_artifacts((tmp_dir / "artifacts").string());

  nlohmann::json state{{"step", st.step},
                       {"epoch", st.cursor.epoch},
                       {"offset", st.cursor.offset},
                       {"objective", objective.name()},
                       {"num_parameters", ps.size()},
                       {"identity", identity}};
  write_text_atomic(tmp_dir / "state.json", state.dump(2));

  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir);
  write_text_atomic(root / kLatest, step_dir_name(st.step));
  // Older checkpoints are dropped only once `latest` points at the new one.
  for (const auto& e : fs::directory_iterator(root)) {
    const auto name = e.path().filename().string();
    if (e.is_directory() && name.rfind("step-", 0) == 0 && name != step_dir_name(st.step)) fs::remove_all(e.path(), ec);
  }
}

std::optional<fs::path> latest_checkpoint(const fs::path& root) {
  std::ifstream in(root / kLatest);
  if (!in) return std::nullopt;
  std::string name;
  std::getline(in, name);
  const auto dir = root / name;
  COLM_CHECK(fs::is_regular_file(dir / "state.json"), "checkpoint '" << (root / kLatest).string() << "' names '"
                                                                     << name << "', which is missing or incomplete");
  return dir;
}

RunState load_checkpoint(const fs::path& dir, TrainObjective& objective, torch::optim::AdamW& opt,
                         const std::string& identity, std::vector<torch::Tensor>& masters) {
  nlohmann::json state;
  try {
    std::ifstream in(dir / "state.json");
    state = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error("checkpoint '" + (dir / "state.json").string() + "' is not valid JSON: " + e.what());
  }
  COLM_CHECK(state.value("identity", "") == identity,
             "checkpoint '" << dir.string() << "' belongs to another run (objective, data or hyper-parameters "
                            << "differ). HINT: use another checkpoint directory, or delete this one to start over");
  auto ps = objective.parameters();
  COLM_CHECK(state.value("num_parameters", size_t{0}) == ps.size(),
             "checkpoint '" << dir.string() << "' holds " << state.value("num_parameters", size_t{0})
                            << " parameter tensors, the model has " << ps.size());
  torch::serialize::InputArchive params;
  params.load_from((dir / "params.pt").string());
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < ps.size(); ++i) {
      torch::Tensor t;
      params.read("p" + std::to_string(i), t);
      COLM_CHECK(t.sizes() == ps[i].sizes(), "checkpoint '" << dir.string() << "': parameter " << i << " has shape "
                                                            << t.sizes() << ", the model's is " << ps[i].sizes());
      ps[i].copy_(t);
      if (i < masters.size() && masters[i].defined()) {
        torch::Tensor m;
        // A checkpoint without master copies (older, or f32 at the time): start from the weights.
        masters[i].copy_(params.try_read("m" + std::to_string(i), m) ? m : t);
      }
    }
  }
  torch::serialize::InputArchive optim;
  optim.load_from((dir / "optimizer.pt").string());
  opt.load(optim);
  torch::serialize::InputArchive rng;
  rng.load_from((dir / "rng.pt").string());
  torch::Tensor gen_state;
  rng.read("cpu_generator", gen_state);
  at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle sharing the global generator
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(gen_state);
  RunState st;
  st.step = state.at("step").get<int64_t>();
  st.cursor.epoch = state.at("epoch").get<int64_t>();
  st.cursor.offset = state.at("offset").get<int64_t>();
  return st;
}

}  // namespace

int64_t last_checkpoint_step(const std::string& checkpoint_dir) {
  if (checkpoint_dir.empty()) return 0;
  auto dir = latest_checkpoint(checkpoint_dir);
  if (!dir) return 0;
  std::ifstream in(*dir / "state.json");
  return nlohmann::json::parse(in).at("step").get<int64_t>();
}

// ---------------------------------------------------------------- the loop

double evaluate(TrainObjective& objective, const TrainData& data, int64_t batch_size, bool valid_split) {
  torch::NoGradGuard no_grad;
  objective.set_training(false);
  double sum = 0;
  int64_t tokens = 0;
  for (size_t at = 0; at < data.size(); at += static_cast<size_t>(batch_size)) {
    std::vector<int64_t> rows;
    for (size_t i = at; i < std::min(data.size(), at + static_cast<size_t>(batch_size)); ++i) rows.push_back(static_cast<int64_t>(i));
    auto batch = make_batch(data, rows, objective.pad_id(), objective.device());
    batch.valid_split = valid_split;
    sum += objective.loss_sum(batch).item<double>();
    tokens += batch.target_tokens;
  }
  return tokens > 0 ? sum / static_cast<double>(tokens) : NAN;
}

TrainResult train(TrainObjective& objective, const TrainData& train_data, const TrainData* valid_data,
                  const TrainConfig& config, const StepCallback& on_step) {
  validate(config);
  train_data.validate("training data");
  if (valid_data) valid_data->validate("validation data");
  const auto params = objective.parameters();
  COLM_CHECK(!params.empty(), "train: objective '" << objective.name() << "' has no trainable parameters");

  // Mixed precision: what the optimiser updates is an f32 master copy of each bf16/fp16 parameter.
  std::vector<torch::Tensor> masters(params.size()), optimised;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto dt = params[i].scalar_type();
    if (config.f32_master && (dt == torch::kBFloat16 || dt == torch::kFloat16)) {
      masters[i] = params[i].detach().to(torch::kFloat32).clone().set_requires_grad(true);
      optimised.push_back(masters[i]);
    } else {
      optimised.push_back(params[i]);
    }
  }
  const bool mixed = std::any_of(masters.begin(), masters.end(), [](const torch::Tensor& m) { return m.defined(); });
  if (mixed) spdlog::info("[{}] low-precision parameters train through f32 master weights", config.label);
  // Decay matrices only: biases and norm gains are not regularised.
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : optimised) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto opts = torch::optim::AdamWOptions(config.lr)
                  .betas({config.beta1, config.beta2})
                  .eps(config.adam_eps)
                  .weight_decay(config.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(opts));
  if (!no_decay.empty()) groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(opts.weight_decay(0.0)));
  torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions(config.lr));

  const auto identity = config_identity(config, objective.name(), train_data.hash());
  TrainResult result;
  RunState st;
  // Dropout draws from Torch's default CPU generator: seed it per run and checkpoint its state.
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(config.seed ^ 0xC0111ULL);
  }
  if (!config.checkpoint_dir.empty() && config.resume) {
    if (auto dir = latest_checkpoint(config.checkpoint_dir)) {
      st = load_checkpoint(*dir, objective, optimizer, identity, masters);
      result.resumed_from = st.step;
      spdlog::info("[{}] resuming from step {} ({})", config.label, st.step, dir->string());
    }
  }
  result.checkpoint = st.step > 0 && !config.checkpoint_dir.empty()
                          ? (fs::path(config.checkpoint_dir) / step_dir_name(st.step)).string()
                          : "";

  const int64_t eval_bs = config.eval_batch_size > 0 ? config.eval_batch_size : config.batch_size;
  auto run_eval = [&](int64_t step, Progress* progress) {
    if (!valid_data) return;
    result.valid_loss = evaluate(objective, *valid_data, eval_bs, true);
    result.valid_history.emplace_back(step, result.valid_loss);
    objective.set_training(true);
    char msg[96];
    std::snprintf(msg, sizeof msg, "step %lld: validation loss %.5f", static_cast<long long>(step), result.valid_loss);
    if (progress) progress->note(msg); else spdlog::info("[{}] {}", config.label, msg);
  };
  if (st.step >= config.steps) {
    spdlog::info("[{}] already finished ({} steps)", config.label, st.step);
    result.steps = st.step;
    run_eval(st.step, nullptr);
    return result;
  }

  objective.set_training(true);
  Progress progress(config.label, config.steps, st.step, config.log_every_s);
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  const auto t0 = std::chrono::steady_clock::now();
  while (st.step < config.steps) {
    const double lr = learning_rate_at(config, st.step);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);

    std::vector<Batch> micro;
    int64_t step_tokens = 0;
    for (int64_t k = 0; k < config.grad_accum; ++k) {
      auto rows = st.cursor.take(config.seed, train_data.size(), config.batch_size, order, order_epoch);
      if (config.parallel) {
        // The whole batch's target tokens (the loss's denominator), then this process's rows.
        const auto world = size_t(config.parallel->world_size()), rank = size_t(config.parallel->rank());
        for (auto r : rows)
          for (auto m : train_data.loss_mask[size_t(r)]) step_tokens += m ? 1 : 0;
        std::vector<int64_t> mine;
        for (size_t i = rank; i < rows.size(); i += world) mine.push_back(rows[i]);
        if (!mine.empty()) micro.push_back(make_batch(train_data, mine, objective.pad_id(), objective.device()));
        continue;
      }
      micro.push_back(make_batch(train_data, rows, objective.pad_id(), objective.device()));
      step_tokens += micro.back().target_tokens;
    }
    // The loss is the mean over every target token of the accumulated step, whatever the split.
    const double denom = static_cast<double>(std::max<int64_t>(1, step_tokens));
    optimizer.zero_grad();
    if (mixed)
      for (auto& p : params) p.mutable_grad() = torch::Tensor();
    double step_loss = 0;
    for (const auto& b : micro) {
      auto loss = objective.loss_sum(b) / denom;
      loss.backward();
      step_loss += loss.item<double>();
    }
    if (config.parallel) {
      // Each process's gradient is its rows' share of the whole batch's mean: their sum is the whole.
      // A parameter no rank gave a gradient keeps none (AdamW skips it, as it would in one process).
      std::vector<torch::Tensor> has_grad{torch::zeros({int64_t(params.size())})};
      for (size_t i = 0; i < params.size(); ++i) has_grad[0][int64_t(i)] = params[i].grad().defined() ? 1.0 : 0.0;
      config.parallel->all_reduce_sum(has_grad);
      std::vector<torch::Tensor> grads;
      for (size_t i = 0; i < params.size(); ++i) {
        if (has_grad[0][int64_t(i)].item<double>() == 0) continue;
        auto& p = params[i];
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        grads.push_back(p.grad());
      }
      config.parallel->all_reduce_sum(grads);
      step_loss = config.parallel->all_reduce_sum(step_loss);
    }
    if (mixed)
      for (size_t i = 0; i < params.size(); ++i)
        if (masters[i].defined() && params[i].grad().defined())
          masters[i].mutable_grad() = params[i].grad().to(torch::kFloat32);
    if (config.clip > 0) torch::nn::utils::clip_grad_norm_(optimised, config.clip);
    optimizer.step();
    if (mixed) {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i)
        if (masters[i].defined()) params[i].copy_(masters[i]);  // rounded to the parameter's dtype
    }
    ++st.step;
    result.tokens += step_tokens;
    result.train_loss = step_loss;
    COLM_CHECK(std::isfinite(step_loss), "[" << config.label << "] the loss became " << step_loss << " at step "
                                             << st.step << ". HINT: lower lr or enable clipping");
    progress.update(st.step, step_loss, step_tokens);
    if (on_step) on_step(st.step, step_loss);

    const bool last = st.step == config.steps;
    if ((config.eval_every > 0 && st.step % config.eval_every == 0) || last) run_eval(st.step, &progress);
    if (!config.checkpoint_dir.empty() && (!config.parallel || config.parallel->rank() == 0) &&
        ((config.checkpoint_every > 0 && st.step % config.checkpoint_every == 0) || last)) {
      save_checkpoint(config.checkpoint_dir, st, objective, optimizer, identity, masters);
      result.checkpoint = (fs::path(config.checkpoint_dir) / step_dir_name(st.step)).string();
    }
  }
  progress.finish();
  result.steps = st.step;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.tokens_per_second = result.seconds > 0 ? static_cast<double>(result.tokens) / result.seconds : 0;
  objective.set_training(false);
  spdlog::info("[{}] done: {} steps, train loss {:.5f}{}, {:.0f} target tok/s", config.label, result.steps,
               result.train_loss,
               std::isnan(result.valid_loss) ? std::string() : fmt::format(", validation loss {:.5f}", result.valid_loss),
               result.tokens_per_second);
  return result;
}

}  // namespace colm

// ================================================================ objectives over experts

namespace colm {

LmObjective::LmObjective(Expert& expert) : expert_(expert) {}
std::vector<torch::Tensor> LmObjective::parameters() { return expert_.parameters(); }
void LmObjective::set_training(bool training) { expert_.set_training(training); }
int64_t LmObjective::pad_id() const { return expert_.tokenizer().pad_id().value_or(0); }
torch::Device LmObjective::device() const { return expert_.device(); }

torch::Tensor LmObjective::loss_sum(const Batch& batch) {
  auto out = expert_.forward(batch.ids, batch.attn_mask);  // logits [B,T,V]
  return lm_loss_sum(out.logits, batch.ids, batch.loss_mask);
}

void LmObjective::save_artifacts(const std::string& dir) const { expert_.save((fs::path(dir) / "model").string()); }

void DeferralSpec::validate() const {
  COLM_CHECK(objective == "marginal_likelihood" || objective == "weak_supervision",
             "deferral training: objective must be marginal_likelihood or weak_supervision, got '" << objective << "'");
  COLM_CHECK(finetune_base == "full" || finetune_base == "none",
             "deferral training: finetune_base must be \"full\" or \"none\", got '" << finetune_base << "'");
  COLM_CHECK(init == "none" || init == "weak" || init == "weak_supervision",
             "deferral training: init must be none or weak, got '" << init << "'");
  COLM_CHECK(pos_weight >= 0, "deferral training: pos_weight must be >= 0 (0: automatic), got " << pos_weight);
  COLM_CHECK(lm_weight >= 0 && lm_weight < 1, "deferral training: lm_weight must be in [0, 1), got " << lm_weight);
  COLM_CHECK(lm_weight == 0 || (objective == "weak_supervision" && finetune_base == "full"),
             "deferral training: lm_weight > 0 needs objective weak_supervision with the base fine-tuned");
  COLM_CHECK(init_steps >= 0, "deferral training: init_steps must be >= 0, got " << init_steps);
}

DeferralObjective::DeferralObjective(Expert& base, DeferralPolicy& policy, std::vector<const ScoreTable*> train_scores,
                                     std::vector<const ScoreTable*> valid_scores, std::string objective,
                                     bool finetune_base, WeakRule rule, double pos_weight,
                                     std::map<std::string, std::string> head_metadata, double lm_weight)
    : base_(base), policy_(policy), train_scores_(std::move(train_scores)), valid_scores_(std::move(valid_scores)),
      objective_(std::move(objective)), finetune_base_(finetune_base), rule_(rule), pos_weight_(pos_weight),
      metadata_(std::move(head_metadata)), lm_weight_(lm_weight) {
  COLM_CHECK(policy_.trainable(), "deferral training: the policy is not trainable (it has no head)");
  COLM_CHECK(!train_scores_.empty(), "deferral training: no assistant scores");
  COLM_CHECK(objective_ == "marginal_likelihood" || objective_ == "weak_supervision",
             "deferral training: unknown objective '" << objective_ << "'");
  COLM_CHECK(lm_weight_ == 0 || (objective_ == "weak_supervision" && finetune_base_),
             "deferral training: an LM share needs the weak-supervision objective with a trainable base");
  metadata_[kHeadObjectiveKey] = objective_;
}

std::vector<torch::Tensor> DeferralObjective::parameters() {
  auto ps = policy_.parameters();
  if (finetune_base_) {
    for (auto& p : base_.parameters()) ps.push_back(p);
  }
  return ps;
}

void DeferralObjective::set_training(bool training) { base_.set_training(training && finetune_base_); }
int64_t DeferralObjective::pad_id() const { return base_.tokenizer().pad_id().value_or(0); }
torch::Device DeferralObjective::device() const { return base_.device(); }

torch::Tensor DeferralObjective::loss_sum(const Batch& batch) {
  const auto& tables = batch.valid_split ? valid_scores_ : train_scores_;
  COLM_CHECK(!tables.empty(), "deferral training: no assistant scores for the " << (batch.valid_split ? "validation" : "training")
                                                                                 << " data");
  const int64_t T = batch.ids.size(1);
  ExpertOutput out;
  {
    // A frozen base runs without autograd: training then costs its forward only.
    std::optional<torch::NoGradGuard> frozen;
    if (!finetune_base_) frozen.emplace();
    out = base_.forward(batch.ids, batch.attn_mask);  // logits [B,T,V], hidden [B,T,d]
  }
  auto mask = batch.loss_mask.slice(1, 1, T);                        // [B,T-1] targets x_1..x_{T-1}
  auto head = policy_.head_logits(out.hidden.slice(1, 0, T - 1));    // [B,T-1,M+1] from h_{t-1}
  const auto M = static_cast<int64_t>(tables.size());
  COLM_CHECK(head.size(-1) == M + 1, "deferral training: the head has " << head.size(-1) << " outputs for " << M
                                                                        << " assistants (expected M+1)");
  std::vector<torch::Tensor> a_logp, a_top1;
  for (const auto* table : tables) {
    auto [lp, top] = table->rows(batch.rows, T);                     // [B,T] each
    a_logp.push_back(lp.slice(1, 1, T).to(head.device()));
    a_top1.push_back(top.slice(1, 1, T).to(head.device()));
  }
  if (objective_ == "marginal_likelihood") {
    auto base_logp = gold_logprobs(out.logits, batch.ids);          // [B,T-1]
    a_logp.insert(a_logp.begin(), base_logp);
    auto comp = torch::stack(a_logp, -1).to(head.scalar_type());      // [B,T-1,M+1]
    return marginal_nll_sum(head, comp, mask);
  }
  auto base_right = gold_is_top1(out.logits, batch.ids);              // [B,T-1]
  auto labels = weak_labels(base_right, torch::stack(a_top1, -1), rule_);  // [B,T-1]
  return weak_supervision_loss_sum(out.logits, batch.ids, batch.loss_mask, head, labels, pos_weight_, lm_weight_);
}

void DeferralObjective::save_artifacts(const std::string& dir) const {
  policy_.save((fs::path(dir) / "head.safetensors").string(), metadata_);
  if (finetune_base_) base_.save((fs::path(dir) / "base").string());
}

namespace {

// Copies a finished run's products from its last checkpoint into out_dir (tmp + rename per entry).
void publish(const std::string& checkpoint, const fs::path& out_dir) {
  COLM_CHECK(!checkpoint.empty(), "deferral training: the run left no checkpoint");
  for (const auto& e : fs::directory_iterator(fs::path(checkpoint) / "artifacts")) {
    const auto dst = out_dir / e.path().filename();
    const auto tmp = out_dir / (e.path().filename().string() + ".tmp");
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::copy(e.path(), tmp, fs::copy_options::recursive);
    fs::remove_all(dst, ec);
    fs::rename(tmp, dst);
  }
}

}  // namespace

DeferralTrainResult train_deferral(Expert& base, const std::vector<Expert*>& assistants, DeferralPolicy& policy,
                                   const TrainData& train_data, const TrainData* valid_data,
                                   const TrainConfig& config, const DeferralSpec& spec, const std::string& out_dir,
                                   const std::string& cache_dir,
                                   const std::function<std::string(const std::string&)>& fingerprint_of_saved_base,
                                   const std::function<void()>& assistants_scored) {
  spec.validate();
  validate(config);
  COLM_CHECK(!assistants.empty(), "deferral training: no assistants");
  COLM_CHECK(!out_dir.empty(), "deferral training: no output directory");
  const auto tok_fp = base.tokenizer().fingerprint();
  std::vector<std::string> assistant_fps;
  for (size_t j = 0; j < assistants.size(); ++j) {
    COLM_CHECK(assistants[j]->tokenizer().fingerprint() == tok_fp,
               "deferral training: assistant " << (j + 1) << " uses another tokenizer than the base; token-level "
                                               << "deferral needs one shared vocabulary");
    assistant_fps.push_back(assistants[j]->fingerprint());
  }
  fs::create_directories(out_dir);
  DeferralTrainResult res;

  // Stage "score": each assistant once per data set, reused across runs.
  const int64_t score_bs = config.eval_batch_size > 0 ? config.eval_batch_size : config.batch_size;
  std::vector<ScoreTable> train_tables, valid_tables;
  for (auto* a : assistants) {
    ScoreCacheInfo info;
    train_tables.push_back(cached_scores(*a, train_data, cache_dir, score_bs, &info));
    res.score_caches.push_back(info.path);
    if (valid_data) valid_tables.push_back(cached_scores(*a, *valid_data, cache_dir, score_bs));
  }
  if (assistants_scored) assistants_scored();  // from here on only the scores are used
  std::vector<const ScoreTable*> train_ptrs, valid_ptrs;
  for (auto& t : train_tables) train_ptrs.push_back(&t);
  for (auto& t : valid_tables) valid_ptrs.push_back(&t);

  std::map<std::string, std::string> meta{{kHeadBaseKey, base.fingerprint()},
                                          {kHeadAssistantsKey, join_fingerprints(assistant_fps)},
                                          {kHeadNumAssistantsKey, std::to_string(assistants.size())},
                                          {kHeadHiddenSizeKey, std::to_string(base.info().hidden_size)},
                                          {"tokenizer_fingerprint", tok_fp},
                                          {"finetune_base", spec.finetune_base},
                                          {"train_data", train_data.hash()}};

  // Pseudo-label balance, computed once over the training set from the cached assistant scores and a
  // frozen pass of the base (the weak objective needs the base's top-1 anyway).
  auto resolve_pos_weight = [&]() {
    if (spec.pos_weight > 0) return spec.pos_weight;
    torch::NoGradGuard no_grad;
    base.set_training(false);
    int64_t pos = 0, neg = 0;
    for (size_t at = 0; at < train_data.size(); at += static_cast<size_t>(score_bs)) {
      std::vector<int64_t> rows;
      for (size_t i = at; i < std::min(train_data.size(), at + static_cast<size_t>(score_bs)); ++i) rows.push_back(static_cast<int64_t>(i));
      auto b = make_batch(train_data, rows, base.tokenizer().pad_id().value_or(0), base.device());
      const int64_t T = b.ids.size(1);
      auto out = base.forward(b.ids, b.attn_mask);
      std::vector<torch::Tensor> top;
      for (auto& t : train_tables) top.push_back(t.rows(rows, T).second.slice(1, 1, T));
      auto labels = weak_labels(gold_is_top1(out.logits, b.ids).cpu(), torch::stack(top, -1), spec.weak_rule);
      auto mask = b.loss_mask.slice(1, 1, T).cpu();
      pos += (labels > 0).logical_and(mask).sum().item<int64_t>();
      neg += (labels == 0).logical_and(mask).sum().item<int64_t>();
    }
    const double w = (pos == 0 || neg == 0) ? 1.0 : static_cast<double>(neg) / static_cast<double>(pos);
    spdlog::info("[train] weak supervision: {} positive / {} negative targets, pos_weight {:.3f}", pos, neg, w);
    return w;
  };

  const bool weak_init = spec.objective == "marginal_likelihood" && spec.init != "none";
  // Data parallel: every rank trains; rank 0 alone writes the products (it alone has checkpoints).
  const bool writer = !config.parallel || config.parallel->rank() == 0;
  if (spec.objective == "weak_supervision" || weak_init) {
    const double pw = resolve_pos_weight();
    // The initialisation fits the head alone; the baseline fine-tunes the base too when asked (the paper).
    const bool tune = !weak_init && spec.finetune_base == "full";
    DeferralObjective weak(base, policy, train_ptrs, valid_ptrs, "weak_supervision", tune, spec.weak_rule, pw, meta,
                           weak_init ? 0.0 : spec.lm_weight);
    TrainConfig c = config;
    c.label = config.label + (weak_init ? ":weak-init" : ":weak");
    if (weak_init && spec.init_steps > 0) c.steps = spec.init_steps;
    c.checkpoint_dir = (fs::path(out_dir) / (weak_init ? "checkpoints-init" : "checkpoints")).string();
    auto r = train(weak, train_data, valid_data, c);
    if (weak_init) res.init = r; else res.main = r;
    if (!weak_init && writer) publish(r.checkpoint, out_dir);
  }
  if (spec.objective == "marginal_likelihood") {
    DeferralObjective ml(base, policy, train_ptrs, valid_ptrs, "marginal_likelihood", spec.finetune_base == "full",
                         spec.weak_rule, 1.0, meta);
    TrainConfig c = config;
    c.checkpoint_dir = (fs::path(out_dir) / "checkpoints").string();
    res.main = train(ml, train_data, valid_data, c);
    if (writer) publish(res.main.checkpoint, out_dir);
  }
  res.head_path = (fs::path(out_dir) / "head.safetensors").string();
  if (spec.finetune_base == "full") {
    res.base_dir = (fs::path(out_dir) / "base").string();
    meta[kHeadObjectiveKey] = spec.objective;
    meta["base_finetuned"] = "full";
    meta["base_initial_fingerprint"] = meta[kHeadBaseKey];
    if (fingerprint_of_saved_base && writer) {
      // The policy holds the final weights (trained or restored from the last checkpoint).
      meta[kHeadBaseKey] = fingerprint_of_saved_base(res.base_dir);
    }
    if (writer) policy.save(res.head_path, meta);
  }
  return res;
}

}  // namespace colm
