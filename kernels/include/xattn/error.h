// The one exception type of the project, and the check macro that throws it.
// Messages say what is wrong and what to change; the CLI prints them as one line.
#pragma once

#include <cstdio>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace xattn {

// Category decides the CLI's exit code (docs/cli-errors.md).
enum class ErrorKind { kInvalidArgument = 2, kBadInput = 3, kIo = 4, kCuda = 5, kInternal = 6 };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {

template <typename T, typename = void>
struct is_number_range : std::false_type {};
template <typename T>
struct is_number_range<T, std::void_t<decltype(std::begin(std::declval<const T&>())),
                                      decltype(std::end(std::declval<const T&>()))>>
    : std::is_arithmetic<std::decay_t<decltype(*std::begin(std::declval<const T&>()))>> {};

// Appends one message part. Numbers (and ranges of numbers, such as tensor sizes, printed
// "[1, 2, 3]") are formatted with snprintf, never through an iostream: a LibTorch wheel loaded in
// Python can carry its own copy of libstdc++'s locale facets, and an iostream formatting a number
// in our library then crashes the process (pytorch/pytorch issues 81543, 109923). Other types
// (c10::Device, at::ScalarType) go through their operator<<, which writes text only.
template <typename T>
void append(std::string& out, const T& value) {
  using U = std::decay_t<T>;
  char text[64];
  if constexpr (std::is_same_v<U, bool>) {
    out += value ? "true" : "false";
  } else if constexpr (std::is_same_v<U, char>) {
    out += value;
  } else if constexpr (std::is_integral_v<U> && std::is_signed_v<U>) {
    std::snprintf(text, sizeof text, "%lld", static_cast<long long>(value));
    out += text;
  } else if constexpr (std::is_integral_v<U>) {
    std::snprintf(text, sizeof text, "%llu", static_cast<unsigned long long>(value));
    out += text;
  } else if constexpr (std::is_floating_point_v<U>) {
    std::snprintf(text, sizeof text, "%g", static_cast<double>(value));
    out += text;
  } else if constexpr (std::is_same_v<U, const char*> || std::is_same_v<U, char*>) {
    out += value ? value : "(null)";
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    out += std::string_view(value);
  } else if constexpr (is_number_range<U>::value) {
    out += '[';
    bool first = true;
    for (const auto& item : value) {
      if (!first) out += ", ";
      first = false;
      append(out, item);
    }
    out += ']';
  } else {
    std::ostringstream stream;
    stream << value;
    out += stream.str();
  }
}

template <typename... Args>
std::string concat(const Args&... args) {
  std::string out;
  (append(out, args), ...);
  return out;
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
