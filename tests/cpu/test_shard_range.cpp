// sample_shard_range: the blocks of samples the ranks of `mpirun xattn calibrate` measure.
#include <gtest/gtest.h>

#include "xattn/calibrate/calibration.h"

namespace {

using xattn::calibrate::sample_shard_range;

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

}  // namespace
