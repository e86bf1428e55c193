// File writing that never loses data, and the small HDF5 vocabulary every xattn file uses.
//
// Every output goes through write_file_atomically: the content is written to a temporary file in
// the target's folder and moved into place only when complete, so a failed run leaves earlier
// results intact; an existing file is replaced only when the caller asked (--force).
#pragma once

#include <H5Cpp.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "xattn/io/paths.h"

namespace xattn::io {

// The steps of an atomic write, for writers that keep a file open across calls (see
// write_file_atomically for the one-call form):
// 1. check_writable: `path` may be written (absent, or overwrite), its folder exists;
//    xattn::Error kIo otherwise, saying to pass --force or to create the folder.
//    check_writable also creates and removes a probe file in the folder, so a folder that takes
//    no new files (read-only, no permission, /proc) is reported before any work.
// 2. temporary_path_for: a fresh name in the same folder (same file system: rename is atomic),
//    recorded until move_into_place or discard_temporary (see remove_temporaries).
// 3. move_into_place: the finished temporary file becomes `path` (without overwrite, never
//    replacing a file that appeared meanwhile); the temporary file is removed on failure.
void check_writable(const std::string& path, bool overwrite);
std::string temporary_path_for(const std::string& path);
void move_into_place(const std::string& temp, const std::string& path, bool overwrite);
// Removes an unfinished temporary file and forgets it.
void discard_temporary(const std::string& temp);

// Unlinks every temporary file still recorded (up to 64 at once). Async-signal-safe: the CLI's
// SIGINT / SIGTERM handler calls it, so an interrupted run leaves no temporary files behind and,
// since outputs are only ever renamed into place, every existing output untouched.
void remove_temporaries() noexcept;

// An input file that can be read: xattn::Error kIo naming `what` and the path when it is
// missing, a folder (or anything but a regular file) or cannot be opened (the system's reason).
void check_readable_file(const std::string& path, const std::string& what);

// Runs write_temp(temporary path), then moves the temporary file to `path`. Without `overwrite`
// an existing `path` is never replaced (xattn::Error kIo saying to pass --force). On failure the
// temporary file is removed and `path` is untouched; the exception propagates.
void write_file_atomically(const std::string& path, bool overwrite,
                           const std::function<void(const std::string&)>& write_temp);

namespace h5 {

// Turns off HDF5's own error printing for the process (errors reach users as xattn::Error).
void silence_library_errors();

// HDF5 1.10 (Debian 12's) can crash, hang or exhaust memory while parsing a damaged file: fuzzing
// found heap overflows and endless loops in its own code (docs/robustness.md). A reader of a
// user's file therefore runs its parse once in a child process first: `parse` runs in a fork
// (output silenced, no core file, killed after kParseSeconds); a child that dies by a signal, or
// does not finish in time, has the file refused with kBadInput naming `what` and `path`. An
// exception in the child is rethrown here (an xattn::Error as it was, an HDF5 exception as a
// kBadInput naming the file), so a file the child refused is never parsed in this process: HDF5
// on a damaged file need not fail the same way twice. If no child can be started, nothing is
// checked. XATTN_HDF5_PARSE_SECONDS overrides the limit
// (tests and fuzzing use a short one).
inline constexpr int kParseSeconds = 30;
void check_parses_safely(const std::string& path, const std::string& what,
                         const std::function<void()>& parse);

bool has(const H5::H5Location& location, const std::string& name);
bool has_attribute(const H5::H5Object& object, const std::string& name);

void set_attribute(H5::H5Object& object, const std::string& name, const std::string& value);
void set_attribute(H5::H5Object& object, const std::string& name, int64_t value);
void set_attribute(H5::H5Object& object, const std::string& name, double value);
void set_attribute(H5::H5Object& object, const std::string& name, const std::vector<int64_t>& values);
void set_attribute(H5::H5Object& object, const std::string& name, const std::vector<double>& values);

// Readers throw xattn::Error(kBadInput, "<context>: attribute '<name>' is missing / not a ...").
std::string string_attribute(const H5::H5Object& object, const std::string& name,
                             const std::string& context);
int64_t int_attribute(const H5::H5Object& object, const std::string& name,
                      const std::string& context);
double double_attribute(const H5::H5Object& object, const std::string& name,
                        const std::string& context);
std::vector<int64_t> int_array_attribute(const H5::H5Object& object, const std::string& name,
                                         const std::string& context);
std::vector<double> double_array_attribute(const H5::H5Object& object, const std::string& name,
                                           const std::string& context);

// float32 / int64 / uint8 datasets with explicit dimensions (deflate-compressed when large).
void write_floats(H5::Group& group, const std::string& name, const std::vector<float>& values,
                  const std::vector<hsize_t>& dims);
void write_bytes(H5::Group& group, const std::string& name, const uint8_t* values,
                 const std::vector<hsize_t>& dims);
// Reads a float dataset whose dimensions must equal `dims` (message names the dataset).
std::vector<float> read_floats(const H5::Group& group, const std::string& name,
                               const std::vector<hsize_t>& dims, const std::string& context);
std::vector<hsize_t> dimensions(const H5::DataSet& dataset);

}  // namespace h5
}  // namespace xattn::io
