// colm::Error: the one exception type that crosses the plugin boundary.
// Plugins translate their own failures into it; core adds the context (file, key, plugin).
#pragma once
#include <stdexcept>
#include <string>

#define COLM_VISIBLE __attribute__((visibility("default")))

namespace colm {

class COLM_VISIBLE Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what);
  ~Error() override;
};

// A configuration error: the message already carries file:line:column.
class COLM_VISIBLE ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& what);
  ~ConfigError() override;
};

}  // namespace colm

// COLM_CHECK(cond, "message " << value): throws colm::Error with the message when cond is false.
#include <sstream>
#define COLM_CHECK(cond, msg)                         \
  do {                                                \
    if (!(cond)) {                                    \
      std::ostringstream colm_check_os_;              \
      colm_check_os_ << msg;                          \
      throw ::colm::Error(colm_check_os_.str());      \
    }                                                 \
  } while (0)
