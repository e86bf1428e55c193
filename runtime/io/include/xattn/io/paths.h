// Path queries and folder operations on plain POSIX calls.
//
// xattn does not use std::filesystem: LibTorch wheels (PyTorch 2.5 and later, pytorch/pytorch
// issue 133437) export their own statically linked copy of libstdc++'s std::filesystem, and in a
// program that links LibTorch those symbols can bind in place of the system library's, built for
// another layout; directory iteration and remove_all then crash (seen with PyTorch 2.11).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xattn::io {

bool path_exists(const std::string& path);      // anything, a dangling link included
bool is_directory(const std::string& path);     // follows links
bool is_regular_file(const std::string& path);  // follows links
// Size in bytes of a regular file; -1 when it is missing or not a regular file.
int64_t file_size(const std::string& path);

// "a/b" + "c" -> "a/b/c"; an empty folder gives the name alone.
std::string join_path(const std::string& folder, const std::string& name);
// The last component ("a/b.h5" -> "b.h5"; trailing slashes ignored: "a/b/" -> "b").
std::string file_name(const std::string& path);
// Everything before the last component ("a/b.h5" -> "a", "b.h5" -> ".", "/b" -> "/").
std::string parent_folder(const std::string& path);
// The file name's suffix from its last dot (".json"); "" when there is none.
std::string extension(const std::string& path);

// The names in a folder (not "." and ".."), sorted; xattn::Error kIo if it cannot be read.
std::vector<std::string> folder_entries(const std::string& folder);
// Creates a folder and its missing parents; xattn::Error kIo naming the path on failure.
void make_folders(const std::string& path);
// Removes a file or a folder with everything in it, without following links; missing is fine.
// Returns false when something could not be removed.
bool remove_tree(const std::string& path);
// A new empty folder "<$TMPDIR or /tmp>/<prefix>XXXXXX"; xattn::Error kIo on failure.
std::string make_temporary_folder(const std::string& prefix);

}  // namespace xattn::io
