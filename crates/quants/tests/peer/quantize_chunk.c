// shuku-quantize-chunk: quantizes raw f32 rows with llama.cpp's own ggml_quantize_chunk, the function
// llama-quantize calls, so that shuku-quants' blocks can be compared with llama.cpp's byte for byte.
// A measuring instrument for the tests, built by build.sh beside it; not part of shuku.
//   usage: shuku-quantize-chunk TYPE N_PER_ROW IN.f32 OUT.bin [IMATRIX.f32]
//   TYPE is ggml's type name (q4_0, q4_K, ...); IN holds rows × N_PER_ROW little-endian f32; the
//   optional IMATRIX holds N_PER_ROW f32 importance weights shared by every row.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml.h"

static float *read_f32(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *buf = malloc(len > 0 ? (size_t)len : 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) { perror(path); exit(2); }
    fclose(f);
    *n = (size_t)len / sizeof(float);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s TYPE N_PER_ROW IN.f32 OUT.bin [IMATRIX.f32]\n", argv[0]);
        return 2;
    }
    enum ggml_type type = GGML_TYPE_COUNT;
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char *name = ggml_type_name((enum ggml_type)t);
        if (name && strcmp(name, argv[1]) == 0) { type = (enum ggml_type)t; break; }
    }
    if (type == GGML_TYPE_COUNT) { fprintf(stderr, "unknown type %s\n", argv[1]); return 2; }
    long n_per_row = atol(argv[2]);
    size_t n = 0;
    float *src = read_f32(argv[3], &n);
    if (n_per_row <= 0 || n % (size_t)n_per_row != 0) { fprintf(stderr, "bad row length\n"); return 2; }
    long nrows = (long)(n / (size_t)n_per_row);
    float *imatrix = NULL;
    if (argc == 6) {
        size_t m = 0;
        imatrix = read_f32(argv[5], &m);
        if (m != (size_t)n_per_row) { fprintf(stderr, "imatrix length %zu != %ld\n", m, n_per_row); return 2; }
    }
    ggml_quantize_init(type);
    size_t row_size = ggml_row_size(type, n_per_row);
    void *dst = malloc(row_size * (size_t)nrows);
    size_t written = ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, imatrix);
    FILE *out = fopen(argv[4], "wb");
    if (!out || fwrite(dst, 1, written, out) != written) { perror(argv[4]); return 2; }
    fclose(out);
    return 0;
}
