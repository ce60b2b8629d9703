# Install rules and the CMake package that out-of-tree plugins build against. Included by the
# top-level CMakeLists.txt after core/ and plugins/; the built-in plugins install themselves
# (colm_add_plugin with COLM_PLUGIN_INSTALL_DESTINATION). `cmake --install BUILD --prefix P` gives
#   P/bin/colm                          finds libcolm_core through its RPATH ($ORIGIN/../lib)
#   P/lib/libcolm_core.so               (CMAKE_INSTALL_LIBDIR)
#   P/lib/colm/plugins/libcolm_*.so     where the installed colm looks (registry.cpp's default_dirs)
#   P/include/colm/*.hpp                the public plugin ABI and the generated version.hpp, nothing else
#   P/lib/cmake/colm/                   colmConfig.cmake, colmConfigVersion.cmake, colmTargets*.cmake,
#                                       ColmPlugin.cmake (colm_add_plugin without the precompiled header)
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(COLM_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/colm)

# The installed binary finds libcolm_core relative to itself; libraries linked from outside the
# build tree and outside the system directories (a libtorch in its own prefix) keep their paths.
file(RELATIVE_PATH _colm_bin_to_lib /${CMAKE_INSTALL_BINDIR} /${CMAKE_INSTALL_LIBDIR})
set_target_properties(colm PROPERTIES INSTALL_RPATH "$ORIGIN/${_colm_bin_to_lib}" INSTALL_RPATH_USE_LINK_PATH ON)
set_target_properties(colm_core PROPERTIES INSTALL_RPATH "$ORIGIN" INSTALL_RPATH_USE_LINK_PATH ON)

install(TARGETS colm RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS colm_core EXPORT colmTargets LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})

# Headers: only core/include/colm (the ABI) plus the generated version.hpp; core/src stays private.
# `include` matches colm_core's INSTALL_INTERFACE include directory.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/core/include/colm DESTINATION include FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/core/include/colm/version.hpp DESTINATION include/colm)

# The package. COLM_API_VERSION is read from api.hpp so the package can report it.
file(STRINGS ${PROJECT_SOURCE_DIR}/core/include/colm/api.hpp _colm_api_line REGEX "^#define COLM_API_VERSION [0-9]+")
string(REGEX REPLACE "^#define COLM_API_VERSION ([0-9]+).*$" "\\1" COLM_API_VERSION "${_colm_api_line}")
install(EXPORT colmTargets NAMESPACE colm:: DESTINATION ${COLM_INSTALL_CMAKEDIR} FILE colmTargets.cmake)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/colmConfig.cmake.in
  ${PROJECT_BINARY_DIR}/package/colmConfig.cmake
  INSTALL_DESTINATION ${COLM_INSTALL_CMAKEDIR}
  PATH_VARS CMAKE_INSTALL_BINDIR COLM_PLUGIN_INSTALL_DESTINATION)
# Before 1.0 a minor release may change the interfaces; COLM_API_VERSION is what the registry checks.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/colmConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/package/colmConfig.cmake
  ${PROJECT_BINARY_DIR}/package/colmConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/ColmPlugin.cmake
  DESTINATION ${COLM_INSTALL_CMAKEDIR})
