#include "xattn/calibrate/version.h"

namespace xattn {

const char* tool_version() { return XATTN_VERSION_STRING; }

}  // namespace xattn
