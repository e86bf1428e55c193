// libFuzzer target: capture files (CaptureReader, as `calibrate --capture` and `estimate` read
// them) from a mutated HDF5 image in /dev/shm: the metadata checks of the constructor, then every
// layer read whole and item by item, each tensor of the shape the attributes promise.
#include "fuzz_common.h"
#include "xattn/io/capture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  static const fuzz::ShmFile file("capture.h5");
  const std::string& path = file.write(data, size);
  fuzz::expect_refusal_only([&] {
    const io::CaptureReader reader(path);
    const io::CaptureInfo& info = reader.info();
    for (int64_t layer : reader.layer_indices()) {
      const io::CaptureLayer l = reader.read_layer(layer);
      fuzz::require(l.q.dim() == 4 && l.q.size(0) == info.batch() && l.q.size(1) == info.heads_q &&
                        l.q.size(3) == info.head_dim,
                    "q [batch, heads_q, padded_len_q, head_dim]");
      fuzz::require(l.k.dim() == 4 && l.k.size(1) == info.heads_kv, "k [.., heads_kv, ..]");
      fuzz::require(l.v.defined() == info.has_v, "v present iff has_v");
      for (int64_t item = 0; item < info.batch(); ++item) {
        const io::CaptureLayer one = reader.read_layer_item(layer, item);
        fuzz::require(one.q.size(2) == info.len_q[size_t(item)] &&
                          one.k.size(2) == info.len_k[size_t(item)],
                      "an item holds its valid lengths");
      }
    }
  });
  return 0;
}
