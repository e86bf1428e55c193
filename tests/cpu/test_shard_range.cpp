// sample_shard_range and shard_work: the blocks of samples and layers the ranks of
// `mpirun xattn calibrate` measure, checked against brute force; merge_shard_statistics: the
// shards' statistics merged back equal one process's, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "scratch.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"

namespace {

using xattn::calibrate::LayerMeasurement;
using xattn::calibrate::merge_shard_statistics;
using xattn::calibrate::sample_shard_range;
using xattn::calibrate::shard_work;
using xattn::calibrate::ShardWork;
using xattn::calibrate::Statistics;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

TEST(SampleShardRange, ContiguousBlocksCoverEverySampleOnceInOrder) {
  for (int64_t samples : {1, 2, 3, 4, 7, 16}) {
    for (int64_t count : {1, 2, 3, 5, 8}) {
      int64_t next = 0;
      for (int64_t i = 0; i < count; ++i) {
        const auto [first, past] = sample_shard_range(samples, i, count);
        EXPECT_EQ(first, next) << samples << " samples, shard " << i << " of " << count;
        EXPECT_LE(first, past);
        EXPECT_LE(past - first, samples / count + 1);
        EXPECT_GE(past - first, samples / count);
        next = past;
      }
      EXPECT_EQ(next, samples) << samples << " samples, " << count << " shards";
    }
  }
  // Fewer samples than ranks: the first ranks get one each, rank 0 always one.
  EXPECT_EQ(sample_shard_range(2, 0, 3), std::make_pair(int64_t(0), int64_t(1)));
  EXPECT_EQ(sample_shard_range(2, 2, 3), std::make_pair(int64_t(2), int64_t(2)));
  EXPECT_EQ(sample_shard_range(5, 1, 2), std::make_pair(int64_t(3), int64_t(5)));
}

// Brute force: the smallest possible largest shard (in measured (sample, layer) pairs) when
// every shard measures layers of one sample only and the shards of a sample split its layers
// as evenly as they can: the minimum over every way of giving each sample at least one of the
// `count` shards (all compositions of count into `samples` parts) of max over samples of
// ceil(layers / shards of the sample).
int64_t best_largest_shard_one_sample_each(int64_t samples, int64_t layers, int64_t count) {
  int64_t best = std::numeric_limits<int64_t>::max();
  std::vector<int64_t> parts;
  std::function<void(int64_t)> deal = [&](int64_t left) {
    if (int64_t(parts.size()) == samples - 1) {
      if (left < 1) return;
      int64_t largest = ceil_div(layers, left);
      for (int64_t g : parts) largest = std::max(largest, ceil_div(layers, g));
      best = std::min(best, largest);
      return;
    }
    for (int64_t g = 1; g <= left - (samples - 1 - int64_t(parts.size())); ++g) {
      parts.push_back(g);
      deal(left - g);
      parts.pop_back();
    }
  };
  deal(count);
  return best;
}

TEST(ShardWork, EverySampleAndLayerOnceBalancedAgainstBruteForce) {
  for (int64_t samples = 0; samples <= 9; ++samples) {
    for (int64_t layers = 1; layers <= 7; ++layers) {
      for (int64_t count = 1; count <= 13; ++count) {
        SCOPED_TRACE(::testing::Message() << samples << " samples, " << layers << " layers, "
                                          << count << " shards");
        std::vector<int> times(size_t(samples * layers), 0);
        std::vector<ShardWork> works;
        int64_t idle = 0, largest = 0;
        std::vector<int64_t> shards_of_sample(size_t(samples), 0);
        for (int64_t r = 0; r < count; ++r) {
          const ShardWork w = shard_work(samples, layers, r, count);
          ASSERT_LE(w.first_sample, w.past_sample);
          ASSERT_LE(w.first_layer, w.past_layer);
          ASSERT_GE(w.first_sample, 0);
          ASSERT_LE(w.past_sample, samples);
          ASSERT_GE(w.first_layer, 0);
          ASSERT_LE(w.past_layer, layers);
          EXPECT_EQ(w.empty(), w.samples() * w.layers() == 0);
          if (w.empty()) {
            ++idle;
            continue;
          }
          for (int64_t s = w.first_sample; s < w.past_sample; ++s)
            for (int64_t l = w.first_layer; l < w.past_layer; ++l) ++times[size_t(s * layers + l)];
          // Shard order is sample-major: each shard starts after the one before it.
          if (!works.empty()) {
            const ShardWork& p = works.back();
            EXPECT_TRUE(w.first_sample == p.past_sample - 1 ? w.first_layer == p.past_layer
                                                             : w.first_sample == p.past_sample &&
                                                                   w.first_layer == 0)
                << "shard " << r;
          } else {
            EXPECT_EQ(w.first_sample, 0);
            EXPECT_EQ(w.first_layer, 0);
          }
          works.push_back(w);
          largest = std::max(largest, w.samples() * w.layers());
          if (w.samples() == 1) ++shards_of_sample[size_t(w.first_sample)];
        }
        // Every (sample, layer) measured exactly once.
        for (size_t i = 0; i < times.size(); ++i) EXPECT_EQ(times[i], 1) << "pair " << i;
        // Every shard has work exactly when there is enough of it; rank 0 always has some.
        EXPECT_EQ(idle, std::max<int64_t>(0, count - samples * layers));
        if (samples > 0) EXPECT_FALSE(shard_work(samples, layers, 0, count).empty());
        if (samples == 0) continue;
        if (samples >= count) {
          // Whole samples: every layer, sample counts within one of each other.
          for (const ShardWork& w : works) {
            EXPECT_EQ(w.first_layer, 0);
            EXPECT_EQ(w.past_layer, layers);
            EXPECT_GE(w.samples(), samples / count);
            EXPECT_LE(w.samples(), ceil_div(samples, count));
          }
        } else {
          // One sample per shard (one forward pass each); shards per sample and layers per
          // shard of a sample within one of each other; the largest shard as small as brute
          // force finds it.
          for (const ShardWork& w : works) EXPECT_EQ(w.samples(), 1);
          if (samples * layers >= count) {
            for (int64_t g : shards_of_sample) {
              EXPECT_GE(g, count / samples);
              EXPECT_LE(g, ceil_div(count, samples));
            }
          }
          for (const ShardWork& w : works) {
            const int64_t g = shards_of_sample[size_t(w.first_sample)];
            EXPECT_GE(w.layers(), layers / std::max<int64_t>(g, 1));
            EXPECT_LE(w.layers(), ceil_div(layers, std::max<int64_t>(g, 1)));
          }
          EXPECT_EQ(largest, best_largest_shard_one_sample_each(samples, layers, count));
        }
      }
    }
  }
}

TEST(ShardWork, TwoSamplesOnThreeAndFourRanks) {
  // The case of tests/mpi: 2 samples of the bundled model's 6 layers.
  auto work = [](int64_t r, int64_t count) {
    const ShardWork w = shard_work(2, 6, r, count);
    return std::vector<int64_t>{w.first_sample, w.past_sample, w.first_layer, w.past_layer};
  };
  EXPECT_EQ(work(0, 3), (std::vector<int64_t>{0, 1, 0, 3}));
  EXPECT_EQ(work(1, 3), (std::vector<int64_t>{0, 1, 3, 6}));
  EXPECT_EQ(work(2, 3), (std::vector<int64_t>{1, 2, 0, 6}));
  EXPECT_EQ(work(0, 4), (std::vector<int64_t>{0, 1, 0, 3}));
  EXPECT_EQ(work(1, 4), (std::vector<int64_t>{0, 1, 3, 6}));
  EXPECT_EQ(work(2, 4), (std::vector<int64_t>{1, 2, 0, 3}));
  EXPECT_EQ(work(3, 4), (std::vector<int64_t>{1, 2, 3, 6}));
  // Unchanged from the sample split when samples suffice.
  EXPECT_EQ(work(1, 2), (std::vector<int64_t>{1, 2, 0, 6}));
  EXPECT_THROW(shard_work(2, 6, 4, 4), xattn::Error);
}

// A made-up measurement of (sample, layer) whose every value is distinct.
LayerMeasurement fake_measurement(int64_t sample, int64_t layer, int64_t heads, int64_t taus) {
  LayerMeasurement m;
  const size_t n = size_t(heads * taus);
  for (size_t i = 0; i < n; ++i) {
    const float base = float(sample * 1000 + layer * 100) + float(i);
    m.density.push_back(base + 0.125f);
    m.recall_mean.push_back(base + 0.25f);
    m.recall_min.push_back(base + 0.375f);
    m.output_error.push_back(base + 0.5f);
    m.projected_error.push_back(base + 0.625f);
    m.prefix_density.push_back(base + 0.75f);
  }
  m.prefix_len = 256;
  return m;
}

// Statistics of samples [first_sample, past_sample) and layers [first_layer, past_layer), as
// the statistics pass builds them.
Statistics fake_statistics(const ShardWork& w) {
  Statistics s;
  s.settings.taus = {0.5, 0.9, 1.0};
  s.model_name = "fake";
  s.model_signature = "arch=fake layers=7";
  s.heads_q = 2;
  s.heads_kv = 1;
  s.head_dim = 16;
  for (int64_t l = w.first_layer; l < w.past_layer; ++l) s.layers.push_back(l);
  for (int64_t i = w.first_sample; i < w.past_sample; ++i) {
    std::vector<LayerMeasurement> per_layer;
    for (int64_t l = w.first_layer; l < w.past_layer; ++l)
      per_layer.push_back(fake_measurement(i, l, s.heads_q, s.num_taus()));
    s.add_sample({512 + i, 512 + i, "data.txt@" + std::to_string(i)}, per_layer);
  }
  return s;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

TEST(MergeShardStatistics, EqualsOneProcessBitForBit) {
  for (int64_t samples = 1; samples <= 5; ++samples) {
    for (int64_t layers = 1; layers <= 5; ++layers) {
      for (int64_t count = 1; count <= 9; ++count) {
        SCOPED_TRACE(::testing::Message() << samples << " samples, " << layers << " layers, "
                                          << count << " shards");
        const Statistics one = fake_statistics({0, samples, 0, layers});
        std::vector<Statistics> shards;
        for (int64_t r = 0; r < count; ++r) {
          const ShardWork w = shard_work(samples, layers, r, count);
          shards.push_back(w.empty() ? Statistics() : fake_statistics(w));
        }
        const Statistics merged = merge_shard_statistics(shards, samples, layers);
        EXPECT_EQ(merged.layers, one.layers);
        ASSERT_EQ(merged.samples.size(), one.samples.size());
        for (size_t i = 0; i < one.samples.size(); ++i) {
          EXPECT_EQ(merged.samples[i].source, one.samples[i].source);
          EXPECT_EQ(merged.samples[i].len_q, one.samples[i].len_q);
          EXPECT_EQ(merged.samples[i].prefix_len, one.samples[i].prefix_len);
        }
        EXPECT_TRUE(same_bits(merged.density, one.density));
        EXPECT_TRUE(same_bits(merged.recall_mean, one.recall_mean));
        EXPECT_TRUE(same_bits(merged.recall_min, one.recall_min));
        EXPECT_TRUE(same_bits(merged.output_error, one.output_error));
        EXPECT_TRUE(same_bits(merged.projected_error, one.projected_error));
        EXPECT_TRUE(same_bits(merged.prefix_density, one.prefix_density));
      }
    }
  }
}

TEST(MergeShardStatistics, ThroughTheStatisticsFileBitForBit) {
  // What a rank sends: its block written and read back in the statistics format.
  xattn::test_files::ScratchFolder folder;
  const int64_t samples = 2, layers = 5, count = 4;
  std::vector<Statistics> shards;
  for (int64_t r = 0; r < count; ++r) {
    const std::string path = folder.file("rank-" + std::to_string(r) + ".h5");
    xattn::calibrate::write_statistics(path, fake_statistics(shard_work(samples, layers, r, count)),
                                       /*overwrite=*/false);
    shards.push_back(xattn::calibrate::read_statistics(path));
  }
  const Statistics merged = merge_shard_statistics(shards, samples, layers);
  const Statistics one = fake_statistics({0, samples, 0, layers});
  EXPECT_EQ(merged.layers, one.layers);
  EXPECT_TRUE(same_bits(merged.density, one.density));
  EXPECT_TRUE(same_bits(merged.projected_error, one.projected_error));
  EXPECT_TRUE(same_bits(merged.prefix_density, one.prefix_density));
}

TEST(MergeShardStatistics, RefusesShardsThatDoNotHoldTheirWork) {
  const int64_t samples = 2, layers = 4, count = 3;
  std::vector<Statistics> shards;
  for (int64_t r = 0; r < count; ++r)
    shards.push_back(fake_statistics(shard_work(samples, layers, r, count)));
  EXPECT_NO_THROW(merge_shard_statistics(shards, samples, layers));
  std::vector<Statistics> swapped = shards;
  std::swap(swapped[0], swapped[1]);  // layers out of order
  EXPECT_THROW(merge_shard_statistics(swapped, samples, layers), xattn::Error);
  std::vector<Statistics> missing = shards;
  missing[1] = Statistics();  // a shard with work sent nothing
  EXPECT_THROW(merge_shard_statistics(missing, samples, layers), xattn::Error);
  EXPECT_THROW(merge_shard_statistics(shards, samples, layers + 1), xattn::Error);
  // Joining blocks of different samples is refused.
  Statistics other = fake_statistics({1, 2, 2, 4});
  EXPECT_THROW(xattn::calibrate::join_statistics_layers({shards[0], other}), xattn::Error);
  // So are shards measured with other sliding windows (statistics format 1.4 layer_windows).
  std::vector<Statistics> windowed = shards;
  windowed[1].settings.layer_windows = {0, 16, 0, 0};
  EXPECT_THROW(merge_shard_statistics(windowed, samples, layers), xattn::Error);
}

}  // namespace
