/* Symbol and section boilerplate shared by the context switchers: one spelling
 * for ELF (Linux, BSD) and Mach-O (macOS). Symbols are hidden: only the C API
 * is exported from libkio. */
#ifndef KIO_ASM_H
#define KIO_ASM_H

#if defined(__APPLE__)
/* The macro below is one source line, so its directives need a statement
 * separator. On arm64 Mach-O ';' starts a comment (everything after the first
 * ';' would be silently dropped, leaving the function without its symbol) and
 * the separator is "%%", as in compiler-rt's assembly.h. */
#if defined(__aarch64__) || defined(__arm64__)
#define KIO_SEP %%
#else
#define KIO_SEP ;
#endif
#define KIO_SYM(name) _##name
#define KIO_FUNC_BEGIN(name)         \
    .text KIO_SEP                    \
    .globl _##name KIO_SEP           \
    .private_extern _##name KIO_SEP  \
    .p2align 6 KIO_SEP               \
    _##name:
#define KIO_FUNC_END(name)
#else
#if defined(__aarch64__)
#define KIO_FUNC_TYPE(name) .type name, %function
#else
#define KIO_FUNC_TYPE(name) .type name, @function
#endif
#define KIO_SYM(name) name
#define KIO_FUNC_BEGIN(name) \
    .text;                   \
    .globl name;             \
    .hidden name;            \
    KIO_FUNC_TYPE(name);     \
    .p2align 6;              \
    name:
#define KIO_FUNC_END(name) .size name, .- name
#endif

#endif
