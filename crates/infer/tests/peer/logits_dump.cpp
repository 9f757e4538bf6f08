// Greedy decoding with llama.cpp's library that records the full logits vector at every step:
// the peer measurement behind the engine's logits-agreement test (llama-simple prints text only).
//
//   shuku-logits-dump MODEL PROMPT N_PREDICT OUT
//
// Tokenizes PROMPT as llama-simple does (add_special and parse_special on), evaluates it in one
// batch, then decodes greedily for N_PREDICT steps (stopping at end of generation). OUT receives,
// little-endian: i32 n_vocab, i32 n_prompt, n_prompt × i32 prompt ids, i32 n_steps, then per step
// the n_vocab f32 logits followed by the i32 token chosen from them.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static bool write_i32(FILE * f, int32_t v) { return fwrite(&v, sizeof v, 1, f) == 1; }

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL PROMPT N_PREDICT OUT\n", argv[0]);
        return 2;
    }
    const std::string prompt = argv[2];
    const int n_predict = atoi(argv[3]);

    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    const int n_prompt = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), nullptr, 0, true, true);
    std::vector<llama_token> ids(n_prompt);
    if (llama_tokenize(vocab, prompt.c_str(), prompt.size(), ids.data(), ids.size(), true, true) < 0) {
        fprintf(stderr, "cannot tokenize the prompt\n");
        return 1;
    }

    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = n_prompt + n_predict;
    cparams.n_batch = n_prompt;
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }

    FILE * out = fopen(argv[4], "wb");
    if (!out) {
        fprintf(stderr, "cannot create %s\n", argv[4]);
        return 1;
    }
    write_i32(out, n_vocab);
    write_i32(out, n_prompt);
    fwrite(ids.data(), sizeof(llama_token), ids.size(), out);

    std::vector<float> rows;
    std::vector<llama_token> chosen;
    std::vector<llama_token> batch_ids = ids;
    for (int step = 0; step < n_predict; ++step) {
        llama_batch batch = llama_batch_get_one(batch_ids.data(), batch_ids.size());
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "llama_decode failed at step %d\n", step);
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int i = 1; i < n_vocab; ++i) {
            if (logits[i] > logits[best]) best = i;
        }
        rows.insert(rows.end(), logits, logits + n_vocab);
        chosen.push_back(best);
        if (llama_vocab_is_eog(vocab, best)) break;
        batch_ids.assign(1, best);
    }
    write_i32(out, (int32_t) chosen.size());
    for (size_t s = 0; s < chosen.size(); ++s) {
        fwrite(rows.data() + s * n_vocab, sizeof(float), n_vocab, out);
        write_i32(out, chosen[s]);
    }
    const bool ok = fclose(out) == 0;
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return ok ? 0 : 1;
}
