#include "xattn/io/paths.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "xattn/error.h"

namespace xattn::io {

bool path_exists(const std::string& path) {
  struct stat info;
  return ::lstat(path.c_str(), &info) == 0;
}

bool is_directory(const std::string& path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

int64_t file_size(const std::string& path) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) return -1;
  return int64_t(info.st_size);
}

std::string join_path(const std::string& folder, const std::string& name) {
  if (folder.empty()) return name;
  return folder.back() == '/' ? folder + name : folder + "/" + name;
}

namespace {

// `path` without trailing slashes ("/" stays "/").
std::string trimmed(const std::string& path) {
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') --end;
  return path.substr(0, end);
}

}  // namespace

std::string file_name(const std::string& path) {
  const std::string p = trimmed(path);
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::string parent_folder(const std::string& path) {
  const std::string p = trimmed(path);
  const size_t slash = p.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::string extension(const std::string& path) {
  const std::string name = file_name(path);
  const size_t dot = name.find_last_of('.');
  return (dot == std::string::npos || dot == 0) ? "" : name.substr(dot);
}

std::vector<std::string> folder_entries(const std::string& folder) {
  DIR* dir = ::opendir(folder.c_str());
  XATTN_CHECK(dir != nullptr, ErrorKind::kIo, "cannot read folder ", folder, ": ",
              std::strerror(errno));
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

void make_folders(const std::string& path) {
  XATTN_CHECK_ARG(!path.empty(), "folder path is empty");
  if (is_directory(path)) return;
  const std::string parent = parent_folder(path);
  if (parent != path && !is_directory(parent)) make_folders(parent);
  XATTN_CHECK(::mkdir(path.c_str(), 0777) == 0 || (errno == EEXIST && is_directory(path)),
              ErrorKind::kIo, "cannot create folder ", path, ": ", std::strerror(errno));
}

namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path) == 0 ? 0 : -1;
}

}  // namespace

bool remove_tree(const std::string& path) {
  if (!path_exists(path)) return true;
  // Depth first (contents before their folder), never following links.
  return ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

std::string make_temporary_folder(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = join_path(tmp && *tmp ? tmp : "/tmp", prefix + "XXXXXX");
  XATTN_CHECK(::mkdtemp(templ.data()) != nullptr, ErrorKind::kIo,
              "cannot create a temporary folder ", templ, ": ", std::strerror(errno));
  return templ;
}

}  // namespace xattn::io
