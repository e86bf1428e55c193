# ctest `install_consumer`: installs the build tree BUILD_DIR into WORK_DIR/prefix, then configures,
# builds and runs examples/consumer against that prefix (cmake -P, so it runs the same everywhere).
# Inputs: BUILD_DIR, SOURCE_DIR, WORK_DIR, GENERATOR, TORCH_DIR.
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install_test.cmake needs -D${var}=...")
  endif()
endforeach()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGN}\n${err}")
  endif()
endfunction()

step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
set(hints -DCMAKE_PREFIX_PATH=${prefix})
if(TORCH_DIR)
  list(APPEND hints -DTorch_DIR=${TORCH_DIR})
endif()
step(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${WORK_DIR}/build -G ${GENERATOR}
     -DCMAKE_BUILD_TYPE=Release ${hints})
step(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
# With a shipped profile: read and turned into an engine by xattn::runtime alone.
step(${WORK_DIR}/build/xattn_consumer ${SOURCE_DIR}/profiles/xattn-byte.h5)
# The consumer must have come from the installed copy, not the source tree.
file(STRINGS ${WORK_DIR}/build/CMakeCache.txt xattn_dir REGEX "^xattn_DIR:")
if(NOT xattn_dir MATCHES "${prefix}")
  message(FATAL_ERROR "find_package(xattn) did not use the installed prefix: ${xattn_dir}")
endif()
