#include "xattn/io/file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "xattn/error.h"

namespace xattn::io {

namespace {

void sync(const std::string& path, bool folder) {
  const int fd = ::open(path.c_str(), folder ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;  // durability is best effort; correctness does not depend on it
  ::fsync(fd);
  ::close(fd);
}

std::string exists_message(const std::string& path) {
  return detail::concat(path, " already exists; pass --force to overwrite it");
}

// Temporary files in flight, in fixed storage a signal handler can read: a slot is free (0),
// being filled (1) or holds a path (2).
constexpr int kMaxTemporaries = 64;
constexpr size_t kMaxTemporaryPath = 4096;
struct TemporarySlot {
  std::atomic<int> state{0};
  char path[kMaxTemporaryPath];
};
TemporarySlot temporaries[kMaxTemporaries];
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler reads these");

void remember_temporary(const std::string& temp) {
  if (temp.size() >= kMaxTemporaryPath) return;
  for (TemporarySlot& slot : temporaries) {
    int expected = 0;
    if (!slot.state.compare_exchange_strong(expected, 1)) continue;
    std::memcpy(slot.path, temp.c_str(), temp.size() + 1);
    slot.state.store(2);
    return;
  }
}

void forget_temporary(const std::string& temp) {
  for (TemporarySlot& slot : temporaries) {
    if (slot.state.load() == 2 && temp == slot.path) {
      slot.state.store(0);
      return;
    }
  }
}

}  // namespace

void discard_temporary(const std::string& temp) {
  ::unlink(temp.c_str());
  forget_temporary(temp);
}

void remove_temporaries() noexcept {
  for (TemporarySlot& slot : temporaries)
    if (slot.state.load() == 2) ::unlink(slot.path);
}

void check_readable_file(const std::string& path, const std::string& what) {
  XATTN_CHECK_ARG(!path.empty(), what, ": the path is empty");
  struct stat info;
  XATTN_CHECK(::stat(path.c_str(), &info) == 0, ErrorKind::kIo, what, " ", path, ": ",
              errno == ENOENT ? "no such file" : std::strerror(errno));
  XATTN_CHECK(!S_ISDIR(info.st_mode), ErrorKind::kIo, what, " ", path,
              " is a folder; give the file itself");
  XATTN_CHECK(S_ISREG(info.st_mode), ErrorKind::kIo, what, " ", path,
              " is not a regular file; give a file");
  const int fd = ::open(path.c_str(), O_RDONLY);
  XATTN_CHECK(fd >= 0, ErrorKind::kIo, what, " ", path, " cannot be read: ", std::strerror(errno));
  ::close(fd);
}

void check_writable(const std::string& path, bool overwrite) {
  XATTN_CHECK_ARG(!path.empty(), "output path is empty");
  struct stat info;
  if (::stat(path.c_str(), &info) == 0) {
    XATTN_CHECK(!S_ISDIR(info.st_mode), ErrorKind::kIo, "cannot write ", path,
                ": it is a folder; give a file name");
    // Never rename over a device, pipe or socket (e.g. /dev/null), even with --force.
    XATTN_CHECK(S_ISREG(info.st_mode), ErrorKind::kIo, "cannot write ", path,
                ": it is not a regular file; give a file name");
  }
  XATTN_CHECK(overwrite || !path_exists(path), ErrorKind::kIo, exists_message(path));
  const std::string folder = parent_folder(path);
  XATTN_CHECK(::stat(folder.c_str(), &info) == 0 && S_ISDIR(info.st_mode), ErrorKind::kIo,
              "cannot write ", path, ": folder ", folder, " does not exist; create it first");
  // A folder may exist and still take no new files (read-only, no permission, /proc): try one.
  const std::string probe = detail::concat(folder, "/.xattn-probe-", ::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd >= 0) {
    ::close(fd);
    ::unlink(probe.c_str());
    return;
  }
  const int error = errno;
  XATTN_CHECK(error == EEXIST, ErrorKind::kIo, "cannot write ", path, ": folder ", folder,
              " does not accept new files (",
              error == ENOENT ? "a virtual file system such as /proc" : std::strerror(error), ")");
}

std::string temporary_path_for(const std::string& path) {
  static std::atomic<int> counter{0};
  const size_t slash = path.find_last_of('/');
  const std::string folder = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string temp = detail::concat(folder, ".", name, ".tmp-", ::getpid(), "-", counter++);
  remember_temporary(temp);
  return temp;
}

void move_into_place(const std::string& temp, const std::string& path, bool overwrite) {
  try {
    sync(temp, false);
    if (overwrite) {
      XATTN_CHECK(::rename(temp.c_str(), path.c_str()) == 0, ErrorKind::kIo, "cannot write ", path,
                  ": ", std::strerror(errno));
    } else if (::link(temp.c_str(), path.c_str()) == 0) {
      // link() fails if the target appeared meanwhile, so nothing is ever replaced.
      ::unlink(temp.c_str());
    } else {
      XATTN_CHECK(errno != EEXIST && !path_exists(path), ErrorKind::kIo, exists_message(path));
      XATTN_CHECK(::rename(temp.c_str(), path.c_str()) == 0, ErrorKind::kIo, "cannot write ", path,
                  ": ", std::strerror(errno));
    }
  } catch (...) {
    discard_temporary(temp);
    throw;
  }
  forget_temporary(temp);
  sync(parent_folder(path), true);
}

void write_file_atomically(const std::string& path, bool overwrite,
                           const std::function<void(const std::string&)>& write_temp) {
  check_writable(path, overwrite);
  const std::string temp = temporary_path_for(path);
  try {
    write_temp(temp);
  } catch (...) {
    discard_temporary(temp);
    throw;
  }
  move_into_place(temp, path, overwrite);
}

namespace h5 {

void silence_library_errors() { H5::Exception::dontPrint(); }

constexpr int kChildRefused = 10;  // the child's parse threw; its refusal is in the pipe

void check_parses_safely(const std::string& path, const std::string& what,
                         const std::function<void()>& parse) {
  int seconds = kParseSeconds;
  if (const char* text = std::getenv("XATTN_HDF5_PARSE_SECONDS")) {
    const int value = std::atoi(text);
    if (value > 0) seconds = value;
  }
  // The child's exception, if its parse throws, comes back through a pipe: kind byte, message.
  int channel[2] = {-1, -1};
  if (::pipe(channel) != 0) return;
  std::fflush(nullptr);  // nothing buffered is written twice
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(channel[0]);
    ::close(channel[1]);
    return;
  }
  if (pid == 0) {
    ::close(channel[0]);
    // The child: default signal actions (not the CLI's clean-up handler, not a fuzzer's), no
    // output, no core file, a deadline; it only parses and leaves without running exit handlers.
    for (int sig : {SIGINT, SIGTERM, SIGALRM, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT})
      std::signal(sig, SIG_DFL);
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) {
      ::dup2(null, STDOUT_FILENO);
      ::dup2(null, STDERR_FILENO);
    }
    const struct rlimit no_core = {0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::alarm(static_cast<unsigned>(seconds));
    std::string refusal;
    try {
      parse();
      ::_exit(0);
    } catch (const Error& e) {
      refusal = char(int(e.kind())) + std::string(e.what());
    } catch (const H5::Exception& e) {
      refusal = char(int(ErrorKind::kBadInput)) +
                detail::concat(what, " ", path, ": damaged or truncated HDF5 file (HDF5: ",
                               e.getDetailMsg(), " in ", e.getFuncName(), "); recreate it");
    } catch (const std::exception& e) {
      refusal = char(int(ErrorKind::kBadInput)) + detail::concat(what, " ", path, ": ", e.what());
    } catch (...) {
    }
    // Past the pipe's buffer the message is cut, not waited on.
    ::fcntl(channel[1], F_SETFL, O_NONBLOCK);
    if (!refusal.empty() && ::write(channel[1], refusal.data(), refusal.size()) < 0) ::_exit(0);
    ::_exit(refusal.empty() ? 0 : kChildRefused);
  }
  ::close(channel[1]);
  std::string refusal;
  char buffer[4096];
  for (ssize_t n; (n = ::read(channel[0], buffer, sizeof(buffer))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    refusal.append(buffer, size_t(n));
  }
  ::close(channel[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  // The child's parse threw: the same refusal, without parsing the file in this process again
  // (HDF5 on a damaged file need not fail the same way twice: a file the child refused at once
  // sent the second parse into an endless loop).
  if (WIFEXITED(status) && WEXITSTATUS(status) == kChildRefused && refusal.size() > 1)
    throw Error(ErrorKind(int(refusal[0])), refusal.substr(1));
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
    throw Error(ErrorKind::kBadInput,
                detail::concat(what, " ", path, ": the HDF5 library did not finish reading it in ",
                               seconds, " s; the file is damaged (or not an HDF5 file xattn "
                               "wrote): recreate it"));
  }
  const std::string how = WIFSIGNALED(status)
                              ? detail::concat("signal ", WTERMSIG(status), ", ",
                                               ::strsignal(WTERMSIG(status)))
                              : detail::concat("exit status ", WEXITSTATUS(status));
  throw Error(ErrorKind::kBadInput,
              detail::concat(what, " ", path, ": the HDF5 library crashed reading it (", how,
                             ", in a separate process); the file is damaged: recreate it"));
}

bool has(const H5::H5Location& location, const std::string& name) {
  return H5Lexists(location.getId(), name.c_str(), H5P_DEFAULT) > 0;
}

bool has_attribute(const H5::H5Object& object, const std::string& name) {
  return object.attrExists(name);
}

void set_attribute(H5::H5Object& object, const std::string& name, const std::string& value) {
  const H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  object.createAttribute(name, type, H5::DataSpace(H5S_SCALAR)).write(type, value);
}

void set_attribute(H5::H5Object& object, const std::string& name, int64_t value) {
  object.createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR))
      .write(H5::PredType::NATIVE_INT64, &value);
}

void set_attribute(H5::H5Object& object, const std::string& name, double value) {
  object.createAttribute(name, H5::PredType::IEEE_F64LE, H5::DataSpace(H5S_SCALAR))
      .write(H5::PredType::NATIVE_DOUBLE, &value);
}

void set_attribute(H5::H5Object& object, const std::string& name,
                   const std::vector<int64_t>& values) {
  const hsize_t n = values.size();
  const H5::DataSpace space = n ? H5::DataSpace(1, &n) : H5::DataSpace(H5S_NULL);
  auto attribute = object.createAttribute(name, H5::PredType::STD_I64LE, space);
  if (n) attribute.write(H5::PredType::NATIVE_INT64, values.data());
}

void set_attribute(H5::H5Object& object, const std::string& name,
                   const std::vector<double>& values) {
  const hsize_t n = values.size();
  const H5::DataSpace space = n ? H5::DataSpace(1, &n) : H5::DataSpace(H5S_NULL);
  auto attribute = object.createAttribute(name, H5::PredType::IEEE_F64LE, space);
  if (n) attribute.write(H5::PredType::NATIVE_DOUBLE, values.data());
}

namespace {

H5::Attribute open_attribute(const H5::H5Object& object, const std::string& name,
                             const std::string& context, H5T_class_t expected_class,
                             const char* expected) {
  XATTN_CHECK_INPUT(object.attrExists(name), context, ": attribute '", name, "' is missing");
  H5::Attribute attribute = object.openAttribute(name);
  XATTN_CHECK_INPUT(attribute.getTypeClass() == expected_class, context, ": attribute '", name,
                    "' is not ", expected);
  return attribute;
}

hssize_t element_count(const H5::Attribute& attribute) {
  const H5::DataSpace space = attribute.getSpace();
  return space.getSimpleExtentType() == H5S_NULL ? 0 : space.getSimpleExtentNpoints();
}

}  // namespace

std::string string_attribute(const H5::H5Object& object, const std::string& name,
                             const std::string& context) {
  H5::Attribute attribute = open_attribute(object, name, context, H5T_STRING, "a string");
  std::string value;
  attribute.read(attribute.getStrType(), value);
  return value;
}

int64_t int_attribute(const H5::H5Object& object, const std::string& name,
                      const std::string& context) {
  H5::Attribute attribute = open_attribute(object, name, context, H5T_INTEGER, "an integer");
  XATTN_CHECK_INPUT(element_count(attribute) == 1, context, ": attribute '", name,
                    "' must be a single integer");
  int64_t value = 0;
  attribute.read(H5::PredType::NATIVE_INT64, &value);
  return value;
}

double double_attribute(const H5::H5Object& object, const std::string& name,
                        const std::string& context) {
  H5::Attribute attribute = open_attribute(object, name, context, H5T_FLOAT, "a float");
  XATTN_CHECK_INPUT(element_count(attribute) == 1, context, ": attribute '", name,
                    "' must be a single number");
  double value = 0;
  attribute.read(H5::PredType::NATIVE_DOUBLE, &value);
  return value;
}

std::vector<int64_t> int_array_attribute(const H5::H5Object& object, const std::string& name,
                                         const std::string& context) {
  H5::Attribute attribute = open_attribute(object, name, context, H5T_INTEGER, "integers");
  std::vector<int64_t> values(size_t(element_count(attribute)));
  if (!values.empty()) attribute.read(H5::PredType::NATIVE_INT64, values.data());
  return values;
}

std::vector<double> double_array_attribute(const H5::H5Object& object, const std::string& name,
                                           const std::string& context) {
  H5::Attribute attribute = open_attribute(object, name, context, H5T_FLOAT, "floats");
  std::vector<double> values(size_t(element_count(attribute)));
  if (!values.empty()) attribute.read(H5::PredType::NATIVE_DOUBLE, values.data());
  return values;
}

namespace {

H5::DSetCreatPropList compressed_layout(const std::vector<hsize_t>& dims, size_t element_bytes) {
  H5::DSetCreatPropList properties;
  hsize_t count = 1;
  for (hsize_t d : dims) count *= d;
  if (count * element_bytes < (1u << 16) || dims.empty()) return properties;
  // Chunks of whole trailing rows, about 64 KiB each.
  std::vector<hsize_t> chunk(dims);
  hsize_t bytes = count * element_bytes;
  for (size_t axis = 0; axis < chunk.size() && bytes > (1u << 16); ++axis) {
    bytes /= chunk[axis];
    chunk[axis] = 1;
  }
  properties.setChunk(int(chunk.size()), chunk.data());
  properties.setShuffle();
  properties.setDeflate(4);
  return properties;
}

}  // namespace

void write_floats(H5::Group& group, const std::string& name, const std::vector<float>& values,
                  const std::vector<hsize_t>& dims) {
  const H5::DataSpace space(int(dims.size()), dims.data());
  H5::DataSet set = group.createDataSet(name, H5::PredType::IEEE_F32LE, space,
                                        compressed_layout(dims, sizeof(float)));
  if (!values.empty()) set.write(values.data(), H5::PredType::NATIVE_FLOAT);
}

void write_bytes(H5::Group& group, const std::string& name, const uint8_t* values,
                 const std::vector<hsize_t>& dims) {
  const H5::DataSpace space(int(dims.size()), dims.data());
  H5::DataSet set =
      group.createDataSet(name, H5::PredType::STD_U8LE, space, compressed_layout(dims, 1));
  set.write(values, H5::PredType::NATIVE_UINT8);
}

std::vector<hsize_t> dimensions(const H5::DataSet& dataset) {
  const H5::DataSpace space = dataset.getSpace();
  std::vector<hsize_t> dims(size_t(space.getSimpleExtentNdims()));
  space.getSimpleExtentDims(dims.data());
  return dims;
}

std::vector<float> read_floats(const H5::Group& group, const std::string& name,
                               const std::vector<hsize_t>& dims, const std::string& context) {
  XATTN_CHECK_INPUT(has(group, name), context, ": dataset '", name, "' is missing");
  H5::DataSet set = group.openDataSet(name);
  XATTN_CHECK_INPUT(set.getTypeClass() == H5T_FLOAT, context, ": dataset '", name,
                    "' is not floating point");
  const std::vector<hsize_t> actual = dimensions(set);
  XATTN_CHECK_INPUT(actual == dims, context, ": dataset '", name, "' has the wrong shape");
  hsize_t count = 1;
  for (hsize_t d : dims) count *= d;
  std::vector<float> values(count);
  if (count) set.read(values.data(), H5::PredType::NATIVE_FLOAT);
  return values;
}

}  // namespace h5
}  // namespace xattn::io
