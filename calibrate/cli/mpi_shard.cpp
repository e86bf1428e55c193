// See mpi_shard.h. The only file that includes mpi.h (XATTN_WITH_MPI).
#include "mpi_shard.h"

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

#include "xattn/error.h"

#ifdef XATTN_WITH_MPI
// The C API only (Open MPI would otherwise pull in its deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace xattn::cli::mpi {
namespace {

// The number of ranks a launcher announced, 1 when none did.
long launched_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* value = std::getenv(name);
    if (value && *value) {
      char* end = nullptr;
      const long n = std::strtol(value, &end, 10);
      if (end && *end == '\0' && n > 1) return n;
    }
  }
  return 1;
}

#ifdef XATTN_WITH_MPI
bool started = false;

void check(int status, const char* what) {
  if (status != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(status, text, &length);
    throw Error(ErrorKind::kInternal, detail::concat(what, " failed: ", std::string(text, length)));
  }
}

// Completes a non-blocking operation, sleeping between polls (a blocking MPI call would spin).
void wait(MPI_Request* request, const char* what) {
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    int done = 0;
    check(MPI_Test(request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    std::this_thread::sleep_for(pause);
    if (pause < std::chrono::milliseconds(20)) pause *= 2;
  }
}

void broadcast_bytes(std::string* bytes, int root) {
  int64_t length = int64_t(bytes->size());
  MPI_Request request;
  check(MPI_Ibcast(&length, 1, MPI_INT64_T, root, MPI_COMM_WORLD, &request), "MPI_Ibcast");
  wait(&request, "MPI_Ibcast");
  XATTN_CHECK(length >= 0 && length < INT_MAX, ErrorKind::kInternal, "message of ", length,
              " bytes is too long for MPI");
  bytes->resize(size_t(length));
  if (length == 0) return;
  check(MPI_Ibcast(bytes->data(), int(length), MPI_CHAR, root, MPI_COMM_WORLD, &request),
        "MPI_Ibcast");
  wait(&request, "MPI_Ibcast");
}
#endif

}  // namespace

World start() {
  World world;
  const long size = launched_size();
  if (size <= 1) return world;
#ifdef XATTN_WITH_MPI
  if (!started) {
    check(MPI_Init(nullptr, nullptr), "MPI_Init");
    started = true;
  }
  check(MPI_Comm_rank(MPI_COMM_WORLD, &world.rank), "MPI_Comm_rank");
  check(MPI_Comm_size(MPI_COMM_WORLD, &world.size), "MPI_Comm_size");
  MPI_Comm host;
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world.rank, MPI_INFO_NULL, &host),
        "MPI_Comm_split_type");
  check(MPI_Comm_rank(host, &world.local_rank), "MPI_Comm_rank");
  MPI_Comm_free(&host);
  return world;
#else
  throw Error(ErrorKind::kInvalidArgument,
              detail::concat("launched as one of ", size, " ranks (mpirun or srun), but this xattn "
                             "was built without MPI: install libopenmpi-dev and rebuild with "
                             "-DXATTN_ENABLE_MPI=ON, or run it without mpirun/srun"));
#endif
}

void finish() {
#ifdef XATTN_WITH_MPI
  if (started) {
    MPI_Finalize();
    started = false;
  }
#endif
}

std::optional<Failure> agree(const std::optional<Failure>& mine) {
#ifdef XATTN_WITH_MPI
  if (started) {
    int size = 1;
    check(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
    const int code = mine ? (mine->code != 0 ? mine->code : 1) : 0;
    std::vector<int> codes(size_t(size), 0);
    MPI_Request request;
    check(MPI_Iallgather(&code, 1, MPI_INT, codes.data(), 1, MPI_INT, MPI_COMM_WORLD, &request),
          "MPI_Iallgather");
    wait(&request, "MPI_Iallgather");
    for (int r = 0; r < size; ++r) {
      if (codes[size_t(r)] == 0) continue;
      Failure failure;
      failure.rank = r;
      failure.code = codes[size_t(r)];
      if (mine) failure.message = mine->message;
      broadcast_bytes(&failure.message, r);  // from the failing rank, to every rank
      return failure;
    }
    return std::nullopt;
  }
#endif
  if (!mine) return std::nullopt;
  Failure failure = *mine;
  failure.rank = 0;
  return failure;
}

std::vector<std::string> gather_to_root(const std::string& bytes) {
#ifdef XATTN_WITH_MPI
  if (started) {
    int rank = 0, size = 1;
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
    XATTN_CHECK(bytes.size() < size_t(INT_MAX), ErrorKind::kInternal, "statistics of ",
                bytes.size(), " bytes are too large to gather; use more ranks");
    const int length = int(bytes.size());
    std::vector<int> lengths(size_t(size), 0);
    MPI_Request request;
    check(MPI_Igather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, MPI_COMM_WORLD, &request),
          "MPI_Igather");
    wait(&request, "MPI_Igather");
    std::vector<int> offsets(size_t(size), 0);
    int64_t total = 0;
    for (int r = 0; r < size; ++r) {
      offsets[size_t(r)] = int(total);
      total += lengths[size_t(r)];
    }
    XATTN_CHECK(total < INT_MAX, ErrorKind::kInternal, "statistics of ", total,
                " bytes are too large to gather on rank 0");
    std::string all(rank == 0 ? size_t(total) : 0, '\0');
    check(MPI_Igatherv(bytes.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                       MPI_CHAR, 0, MPI_COMM_WORLD, &request),
          "MPI_Igatherv");
    wait(&request, "MPI_Igatherv");
    if (rank != 0) return {};
    std::vector<std::string> parts;
    for (int r = 0; r < size; ++r)
      parts.push_back(all.substr(size_t(offsets[size_t(r)]), size_t(lengths[size_t(r)])));
    return parts;
  }
#endif
  return {bytes};
}

}  // namespace xattn::cli::mpi
