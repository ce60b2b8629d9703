# Helpers, one per target kind: colm_add_plugin (hidden-visibility MODULE in the plugin dir, see
# ColmPlugin.cmake), colm_add_test (ColmTesting.cmake), and the precompiled torch header.
include_guard(GLOBAL)

# Precompiled <torch/torch.h>: built once per compile-flag set and reused by every target of that set.
function(colm_use_pch target)
  if(NOT COLM_PCH)
    return()
  endif()
  get_target_property(_vis ${target} CXX_VISIBILITY_PRESET)
  if(_vis STREQUAL "hidden")
    set(_donor colm_pch_hidden)
  else()
    set(_donor colm_pch_default)
  endif()
  if(TARGET ${_donor})
    target_precompile_headers(${target} REUSE_FROM ${_donor})
  endif()
endfunction()

# colm_add_plugin(NAME SOURCES ... [LIBRARIES ...] [OUTPUT_DIR dir]): defined in ColmPlugin.cmake, which
# the installed package ships too; it calls colm_use_pch() when this file has defined it.
include(${CMAKE_CURRENT_LIST_DIR}/ColmPlugin.cmake)
