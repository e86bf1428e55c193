// The one exception type of the project, and the check macro that throws it.
// Messages say what is wrong and what to change; the CLI prints them as one line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace xattn {

// Category decides the CLI's exit code.
enum class ErrorKind { kInvalidArgument = 2, kBadInput = 3, kIo = 4, kCuda = 5, kInternal = 6 };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

}  // namespace xattn

// XATTN_CHECK(cond, kind, message parts...): throws xattn::Error(kind, "message parts").
#define XATTN_CHECK(cond, kind, ...)                                           \
  do {                                                                         \
    if (!(cond)) throw ::xattn::Error((kind), ::xattn::detail::concat(__VA_ARGS__)); \
  } while (0)

#define XATTN_CHECK_ARG(cond, ...) XATTN_CHECK(cond, ::xattn::ErrorKind::kInvalidArgument, __VA_ARGS__)
#define XATTN_CHECK_INPUT(cond, ...) XATTN_CHECK(cond, ::xattn::ErrorKind::kBadInput, __VA_ARGS__)
