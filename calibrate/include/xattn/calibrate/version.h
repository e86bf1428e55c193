// Version of the xattn tools, recorded in every file they write.
#pragma once

namespace xattn {

const char* tool_version();

}  // namespace xattn
