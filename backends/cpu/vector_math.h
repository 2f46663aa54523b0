// Announces glibc's vector math (libmvec) for exp, log, tanh, pow so that loops over them vectorise (internal).
#pragma once

#include <cmath>

// glibc's <math.h> announces the SIMD variants of exp, log, tanh, pow... only
// under -ffast-math, which would also let the compiler assume that no value is
// inf or NaN: wrong for masked softmax rows (-inf) and for NaN checks. These
// redeclarations announce the same variants (they exist in libmvec, which
// libm pulls in on x86-64) without changing any arithmetic. Loops over them
// need -fno-math-errno, set for this library in CMakeLists.txt.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
extern "C" {
__attribute__((simd("notinbranch"))) float expf(float) noexcept;
__attribute__((simd("notinbranch"))) double exp(double) noexcept;
__attribute__((simd("notinbranch"))) float logf(float) noexcept;
__attribute__((simd("notinbranch"))) double log(double) noexcept;
__attribute__((simd("notinbranch"))) float tanhf(float) noexcept;
__attribute__((simd("notinbranch"))) double tanh(double) noexcept;
__attribute__((simd("notinbranch"))) float powf(float, float) noexcept;
__attribute__((simd("notinbranch"))) double pow(double, double) noexcept;
}
#endif
