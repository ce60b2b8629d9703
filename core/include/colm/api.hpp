// The plugin ABI: the API version, the plugin description and the export macro.
// A plugin includes only headers from core/include/colm; everything it exports goes through here.
#pragma once
#include <cstdint>
#include <string>

#include <boost/config.hpp>
#include <boost/dll/alias.hpp>

#include "colm/error.hpp"
#include "colm/version.hpp"

// Bumped whenever an interface in core/include/colm changes in a way that breaks compiled plugins.
#define COLM_API_VERSION 2

// Test builds may define COLM_PLUGIN_API_VERSION to build a plugin that claims another version.
#ifndef COLM_PLUGIN_API_VERSION
#define COLM_PLUGIN_API_VERSION COLM_API_VERSION
#endif

#if defined(__clang__)
#define COLM_COMPILER_ID "clang-" BOOST_STRINGIZE(__clang_major__)
#elif defined(__GNUC__)
#define COLM_COMPILER_ID "gcc-" BOOST_STRINGIZE(__GNUC__)
#else
#define COLM_COMPILER_ID "unknown"
#endif

#ifdef _GLIBCXX_USE_CXX11_ABI
#define COLM_CXX11_ABI _GLIBCXX_USE_CXX11_ABI
#else
#define COLM_CXX11_ABI 0
#endif

namespace colm {

enum class PluginKind : int { expert = 1, policy = 2, task = 3 };

COLM_VISIBLE const char* to_string(PluginKind kind);

// Plain data on purpose: the registry reads it before it trusts the plugin's std::string layout.
struct PluginInfo {
  int api_version;          // COLM_API_VERSION the plugin was compiled against
  PluginKind kind;
  const char* name;         // registry name, e.g. "transformer"
  const char* version;      // the plugin's own version
  const char* compiler;     // COLM_COMPILER_ID
  int cxx11_abi;            // _GLIBCXX_USE_CXX11_ABI
  const char* torch_version;
};

// The core's own fingerprint, compared against each plugin's.
COLM_VISIBLE PluginInfo core_build_info();

}  // namespace colm

// Symbol names the registry looks up (Boost.DLL aliases).
#define COLM_PLUGIN_INFO_SYMBOL colm_plugin_info
#define COLM_PLUGIN_FACTORY_SYMBOL colm_plugin_factory
