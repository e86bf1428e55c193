// The POSIX path helpers that stand in for std::filesystem (xattn/paths.h says why).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "scratch.h"
#include "xattn/error.h"
#include "xattn/io/paths.h"

namespace xattn::io {
namespace {

TEST(Paths, NamesFoldersAndExtensions) {
  EXPECT_EQ(join_path("a/b", "c.h5"), "a/b/c.h5");
  EXPECT_EQ(join_path("a/b/", "c.h5"), "a/b/c.h5");
  EXPECT_EQ(join_path("", "c.h5"), "c.h5");
  EXPECT_EQ(file_name("models/llama/"), "llama");
  EXPECT_EQ(file_name("a/b.h5"), "b.h5");
  EXPECT_EQ(file_name("b.h5"), "b.h5");
  EXPECT_EQ(parent_folder("a/b.h5"), "a");
  EXPECT_EQ(parent_folder("b.h5"), ".");
  EXPECT_EQ(parent_folder("/b.h5"), "/");
  EXPECT_EQ(extension("a.b/c.safetensors"), ".safetensors");
  EXPECT_EQ(extension("a.b/c"), "");
  EXPECT_EQ(extension(".hidden"), "");
}

TEST(Paths, FoldersAreMadeListedAndRemovedWithoutFollowingLinks) {
  const test_files::ScratchFolder outside("xattn-paths-outside-");
  std::ofstream(outside.file("keep.txt")) << "kept";

  const std::string root = make_temporary_folder("xattn-paths-");
  EXPECT_TRUE(is_directory(root));
  EXPECT_NE(make_temporary_folder("xattn-paths-"), root) << "temporary folders must be fresh";
  make_folders(join_path(root, "x/y/z"));
  make_folders(join_path(root, "x/y/z"));  // existing: fine
  EXPECT_TRUE(is_directory(join_path(root, "x/y/z")));
  std::ofstream(join_path(root, "x/b.bin")) << "12345";
  std::ofstream(join_path(root, "x/a.bin")) << "1";
  ASSERT_EQ(::symlink(outside.path().c_str(), join_path(root, "x/link").c_str()), 0);
  EXPECT_EQ(folder_entries(join_path(root, "x")),
            (std::vector<std::string>{"a.bin", "b.bin", "link", "y"}));
  EXPECT_EQ(file_size(join_path(root, "x/b.bin")), 5);
  EXPECT_EQ(file_size(join_path(root, "x/y")), -1);
  EXPECT_TRUE(is_regular_file(join_path(root, "x/a.bin")));
  EXPECT_FALSE(is_regular_file(join_path(root, "x/y")));

  EXPECT_TRUE(remove_tree(root));
  EXPECT_FALSE(path_exists(root));
  EXPECT_TRUE(is_regular_file(outside.file("keep.txt"))) << "remove_tree followed a link";
  EXPECT_TRUE(remove_tree(root)) << "a missing path is already removed";

  EXPECT_THROW(folder_entries(root), Error);
  std::ofstream(outside.file("file")) << "x";
  EXPECT_THROW(make_folders(join_path(outside.file("file"), "sub")), Error);
}

}  // namespace
}  // namespace xattn::io
