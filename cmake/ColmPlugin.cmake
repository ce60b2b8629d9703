# colm_add_plugin(): the one way to build a colm plugin, in this repository and out of tree.
# Installed with the CMake package (find_package(colm) includes it); the precompiled header is
# this repository's own business (ColmHelpers.cmake) and is skipped where it is not defined.
include_guard(GLOBAL)

# colm_add_plugin(NAME SOURCES a.cpp b.cpp [LIBRARIES ...] [OUTPUT_DIR dir])
# Builds target colm_plugin_<NAME>: libcolm_<NAME>.so, a MODULE with hidden visibility linked to
# colm::api. It lands in OUTPUT_DIR, else COLM_PLUGIN_OUTPUT_DIR, else <build dir>/plugins, the
# directory to give `colm --plugin-dir` (or COLM_PLUGIN_PATH). When COLM_PLUGIN_INSTALL_DESTINATION
# is set and OUTPUT_DIR is not given, `cmake --install` puts the plugin there.
function(colm_add_plugin name)
  cmake_parse_arguments(P "" "OUTPUT_DIR" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT P_SOURCES)
    message(FATAL_ERROR "colm_add_plugin(${name}): no SOURCES given")
  endif()
  set(target colm_plugin_${name})
  add_library(${target} MODULE ${P_SOURCES})
  target_link_libraries(${target} PRIVATE colm::api ${P_LIBRARIES})
  # Only the two Boost.DLL aliases COLM_PLUGIN exports are visible: nothing else of the plugin can
  # clash with core or with another plugin.
  set_target_properties(${target} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    PREFIX "lib"
    OUTPUT_NAME "colm_${name}")
  if(P_OUTPUT_DIR)
    set(_dir ${P_OUTPUT_DIR})
  elseif(COLM_PLUGIN_OUTPUT_DIR)
    set(_dir ${COLM_PLUGIN_OUTPUT_DIR})
  else()
    set(_dir ${CMAKE_BINARY_DIR}/plugins)
  endif()
  set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${_dir})
  if(COMMAND colm_use_pch)
    colm_use_pch(${target})
  endif()
  if(TARGET colm_plugins)
    add_dependencies(colm_plugins ${target})
  endif()
  if(COLM_PLUGIN_INSTALL_DESTINATION AND NOT P_OUTPUT_DIR)
    if(COLM_PLUGIN_INSTALL_RPATH)
      set_target_properties(${target} PROPERTIES INSTALL_RPATH "${COLM_PLUGIN_INSTALL_RPATH}")
    endif()
    install(TARGETS ${target} LIBRARY DESTINATION ${COLM_PLUGIN_INSTALL_DESTINATION})
  endif()
endfunction()
