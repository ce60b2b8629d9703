# Helpers, one per target kind: colm_add_plugin (hidden-visibility MODULE in the plugin dir),
# colm_add_test (a Catch2 executable registered with CTest), colm_add_bench.
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

# colm_add_plugin(NAME SOURCES a.cpp b.cpp [LIBRARIES ...])
# Builds libcolm_<kind>_<NAME>.so as a MODULE with hidden visibility into COLM_PLUGIN_OUTPUT_DIR.
function(colm_add_plugin name)
  cmake_parse_arguments(P "" "OUTPUT_DIR" "SOURCES;LIBRARIES" ${ARGN})
  set(target colm_plugin_${name})
  add_library(${target} MODULE ${P_SOURCES})
  target_link_libraries(${target} PRIVATE colm::api ${P_LIBRARIES})
  set_target_properties(${target} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    PREFIX "lib"
    OUTPUT_NAME "colm_${name}")
  if(P_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${P_OUTPUT_DIR})
  elseif(COLM_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${COLM_PLUGIN_OUTPUT_DIR})
  endif()
  colm_use_pch(${target})
  if(TARGET colm_plugins)
    add_dependencies(colm_plugins ${target})
  endif()
endfunction()
