// The few MPI operations a sharded `xattn calibrate` needs (docs/mpi.md), so that nothing else
// includes mpi.h. Built without MPI (XATTN_ENABLE_MPI off or Open MPI missing) every process is
// rank 0 of 1, and a launch by mpirun or srun with more than one rank is refused.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace xattn::cli::mpi {

struct World {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // rank among the processes of this host (picks the GPU)
};

// Starts MPI when this process was launched with more than one rank (mpirun: OMPI_COMM_WORLD_SIZE,
// srun: SLURM_STEP_NUM_TASKS, other launchers: PMI_SIZE / PMIX_SIZE); otherwise a world of one,
// without touching MPI. Throws xattn::Error when launched that way by a build without MPI.
World start();
// MPI_Finalize when start() initialized MPI; nothing otherwise.
void finish();

// One rank's trouble: an exit code (xattn::ErrorKind) and a one-line message.
struct Failure {
  int rank = 0;
  int code = 0;
  std::string message;
};

// Collective: every rank says whether it failed (mine; nullopt: fine). Every rank gets the same
// answer: the lowest failing rank's failure, or nullopt when none failed. Waiting ranks sleep
// between polls rather than spin, so they leave the cores to the ranks that work.
std::optional<Failure> agree(const std::optional<Failure>& mine);

// Collective: each rank's bytes, in rank order, on rank 0; an empty list on the other ranks.
std::vector<std::string> gather_to_root(const std::string& bytes);

}  // namespace xattn::cli::mpi
