// libFuzzer target: a checkpoint folder's model.safetensors.index.json (the input) beside two
// small valid shards, read through model::Checkpoint as the runner does, then every tensor it
// names loaded. A shard the index names but the folder lacks is an I/O error (exit 4), any other
// refusal bad input (exit 3).
#include <stdlib.h>

#include <string>

#include "fuzz_common.h"
#include "xattn/io/paths.h"
#include "xattn/model/safetensors.h"

namespace {

// A model folder in /dev/shm, made once per process.
struct Folder {
  std::string path;
  Folder() {
    char name[] = "/dev/shm/xattn-fuzz-index-XXXXXX";
    if (!::mkdtemp(name)) xattn::fuzz::ShmFile::die("cannot create a folder in /dev/shm");
    path = name;
    // Shards as Hugging Face names them; the seed index maps "a" and "b" to them.
    xattn::model::write_safetensors(path + "/model-00001-of-00002.safetensors",
                                    {{"a", at::arange(4, at::kFloat)}});
    xattn::model::write_safetensors(path + "/model-00002-of-00002.safetensors",
                                    {{"b", at::ones({2, 3}, at::kBFloat16)}});
  }
  ~Folder() { xattn::io::remove_tree(path); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  static const Folder folder;
  const std::string index = folder.path + "/model.safetensors.index.json";
  FILE* out = std::fopen(index.c_str(), "wb");
  if (!out || std::fwrite(data, 1, size, out) != size) fuzz::ShmFile::die("cannot write " + index);
  std::fclose(out);
  fuzz::expect_refusal_only(
      [&] {
        const model::Checkpoint checkpoint(folder.path);
        for (const std::string& name : checkpoint.names()) checkpoint.load(name);
      },
      {ErrorKind::kBadInput, ErrorKind::kIo});
  return 0;
}
