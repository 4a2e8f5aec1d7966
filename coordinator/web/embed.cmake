# cmake -DIN=page.html -DOUT=header.h -DNAME=kSymbol -P embed.cmake
# Writes the file as one C++ raw string literal, so the binary serves it with nothing
# read from disk at run time.
file(READ "${IN}" _content)
set(_delim "moe_embed")
string(FIND "${_content}" ")${_delim}\"" _clash)
if(NOT _clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw string delimiter )${_delim}\"")
endif()
file(WRITE "${OUT}.tmp"
  "// Generated from ${IN} by coordinator/web/embed.cmake; do not edit.\n"
  "#pragma once\n"
  "inline constexpr char ${NAME}[] = R\"${_delim}(${_content})${_delim}\";\n")
file(RENAME "${OUT}.tmp" "${OUT}")
