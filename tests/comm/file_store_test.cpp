// The file store: whole values, waits across threads, a clear timeout, and
// keys that stay inside the folder.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "comm/file_store.h"
#include "ir/diagnostic.h"
#include "tests/temp_dir.h"

namespace pf {
namespace {

using namespace std::chrono_literals;

using testing_support::TempDir;

TEST(FileStore, AValueSetIsReadBackWhole) {
  TempDir dir;
  FileStore store(dir.str(), 1000ms);
  const std::string value("\0binary\xff", 8);
  store.set("nccl.id", value);
  EXPECT_EQ(store.get("nccl.id"), value);
  EXPECT_TRUE(store.check({"nccl.id"}));
  EXPECT_FALSE(store.check({"nccl.id", "other"}));
}

TEST(FileStore, GetWaitsForAnotherThread) {
  TempDir dir;
  FileStore store(dir.str(), 5000ms);
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    FileStore(dir.str(), 5000ms).set("late", "here");
  });
  EXPECT_EQ(store.get("late"), "here");
  writer.join();
}

TEST(FileStore, AMissingKeyTimesOutWithAClearMessage) {
  TempDir dir;
  FileStore store(dir.str(), 30ms);
  try {
    store.get("never");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "file store: no value for 'never' in " + dir.str() +
                               " after 30 ms (has the other rank started?)");
  }
}

TEST(FileStore, AnyKeyIsOneFileInTheFolder) {
  TempDir dir;
  FileStore store(dir.str(), 30ms);
  store.set("../escape", "x");
  store.set(".hidden/and more", "y");
  EXPECT_TRUE(std::filesystem::exists(dir.str() + "/%2E.%2Fescape"));
  EXPECT_TRUE(std::filesystem::exists(dir.str() + "/%2Ehidden%2Fand%20more"));
  EXPECT_EQ(store.get("../escape"), "x");
  EXPECT_THROW(store.set("", "x"), Error);
}

TEST(FileStore, AddCountsForEveryThread) {
  TempDir dir;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      FileStore store(dir.str(), 1000ms);
      for (int i = 0; i < 25; ++i) store.add("n", 1);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(FileStore(dir.str(), 1000ms).add("n", 0), 100);
}

}  // namespace
}  // namespace pf
