/* One GRU step, forward and backward, as single passes over the gates: the CPU kernels behind
 * pymarl_nonmono/numerics/fused_gru.py (which does the matrix products with torch).
 *
 * torch's GRUCell on the CPU runs about ten element-wise kernels per step, each a pass over
 * memory, and autograd keeps a node and fresh buffers for each; at PyMARL sizes (a few hundred
 * rows of width 64) those cost more than the step's matrix products. Here the gates are one loop
 * that the compiler vectorises (built with -O3 -fno-trapping-math; target_clones picks the
 * x86-64-v4 (AVX-512), v3 (AVX2, FMA) or baseline version at load time).
 *
 * Layout and maths are torch's GRUCell: gates ordered (r, z, n),
 *   r = sigmoid(gi_r + bi_r + gh_r + bh_r),  z = sigmoid(gi_z + bi_z + gh_z + bh_z),
 *   hn = gh_n + bh_n,  n = tanh(gi_n + bi_n + r * hn),  h' = n + z * (h - n)
 * with gi = x W_ih^T and gh = h W_hh^T computed by the caller, biases added here.
 * Rows are contiguous: gi, gh [rows, 3H]; h, h' [rows, H]; saved [rows, 4H] = (r, z, n, hn).
 */
#include <Python.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* The x86-64 levels: v4 (AVX-512), v3 (AVX2 with FMA), the baseline. Both vector levels have FMA,
 * so the compiler contracts the same multiply-adds in each and AVX2 and AVX-512 machines compute
 * the same values. */
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif
#define R __restrict__

/* exp for floats, written without branches so that loops calling it vectorise:
 * x = k ln2 + f with |f| <= ln2/2, exp(f) by a degree-6 polynomial (Cephes' coefficients,
 * ~1 ulp), 2^k put into the exponent bits. Clamped to [-87, 88], where float exp is finite. */
static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float shifted = x * 1.44269504088896341f + 12582912.0f;  /* 1.5 * 2^23: rounds to an integer */
    float k = shifted - 12582912.0f;
    float f = x - k * 0.693359375f;
    f = f - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    union { float f; int32_t i; } bits;
    bits.f = p;
    bits.i += (int32_t)k * 8388608; /* k * 2^23: a left shift of a negative k is undefined in C */
    return bits.f;
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

/* tanh from exp(-2|x|), and near 0 (where 1 - e cancels) from its series. */
static inline float tanh_f(float x) {
    float e = exp_f(-2.0f * __builtin_fabsf(x));
    float large = __builtin_copysignf((1.0f - e) / (1.0f + e), x);
    float x2 = x * x;
    float small = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
    return __builtin_fabsf(x) < 0.125f ? small : large;
}

static inline void forward_row(const float *R gi, const float *R gh, const float *R bi, const float *R bh,
                               const float *R h, float *R out, float *R saved, int64_t hid, int save) {
    for (int64_t j = 0; j < hid; ++j) {
        float r = sigmoid_f(gi[j] + bi[j] + gh[j] + bh[j]);
        float z = sigmoid_f(gi[hid + j] + bi[hid + j] + gh[hid + j] + bh[hid + j]);
        float hn = gh[2 * hid + j] + bh[2 * hid + j];
        float n = tanh_f(gi[2 * hid + j] + bi[2 * hid + j] + r * hn);
        out[j] = n + z * (h[j] - n);
        if (save) {
            saved[j] = r;
            saved[hid + j] = z;
            saved[2 * hid + j] = n;
            saved[3 * hid + j] = hn;
        }
    }
}

/* Two copies, so that neither loop tests `save`. */
static void forward_row_saving(const float *R gi, const float *R gh, const float *R bi, const float *R bh,
                               const float *R h, float *R out, float *R saved, int64_t hid) {
    forward_row(gi, gh, bi, bh, h, out, saved, hid, 1);
}

static void forward_row_only(const float *R gi, const float *R gh, const float *R bi, const float *R bh,
                             const float *R h, float *R out, int64_t hid) {
    forward_row(gi, gh, bi, bh, h, out, 0, hid, 0);
}

/* h' for `rows` rows; saved (may be NULL: no backward to come) receives (r, z, n, hn). */
CLONES void gru_step_forward(const float *gi, const float *gh, const float *bi, const float *bh,
                             const float *h, float *out, float *saved, int64_t rows, int64_t hid) {
    for (int64_t i = 0; i < rows; ++i) {
        if (saved)
            forward_row_saving(gi + i * 3 * hid, gh + i * 3 * hid, bi, bh, h + i * hid, out + i * hid,
                               saved + i * 4 * hid, hid);
        else
            forward_row_only(gi + i * 3 * hid, gh + i * 3 * hid, bi, bh, h + i * hid, out + i * hid, hid);
    }
}

static inline void backward_row(const float *R carry, const float *R grad, const float *R saved,
                                const float *R h, float *R di_r, float *R di_z, float *R di_n,
                                float *R dh_r, float *R dh_z, float *R dh_n, float *R direct, int64_t hid) {
    for (int64_t j = 0; j < hid; ++j) {
        float r = saved[j], z = saved[hid + j], n = saved[2 * hid + j], hn = saved[3 * hid + j];
        float dh = carry[j] + grad[j];
        float dn = dh * (1.0f - z) * (1.0f - n * n);
        float dz = dh * (h[j] - n) * z * (1.0f - z);
        float dr = dn * hn * r * (1.0f - r);
        float dhn = dn * r;
        di_r[j] = dr;
        di_z[j] = dz;
        di_n[j] = dn;
        dh_r[j] = dr;
        dh_z[j] = dz;
        dh_n[j] = dhn;
        direct[j] = dh * z;
    }
}

/* Backward of one step for `rows` rows. The gradient reaching h' is carry + grad (from the next
 * step, and from this step's output). Writes the gates' gradients dgi, dgh [rows, 3H] and
 * direct = dL/dh through z [rows, H]; the products with W_ih, W_hh and the inputs, and the bias
 * gradients (the column sums of dgi and dgh), are the caller's. */
CLONES void gru_step_backward(const float *carry, const float *grad, const float *saved, const float *h,
                              float *dgi, float *dgh, float *direct, int64_t rows, int64_t hid) {
    for (int64_t i = 0; i < rows; ++i) {
        float *di = dgi + i * 3 * hid, *dg = dgh + i * 3 * hid;
        backward_row(carry + i * hid, grad + i * hid, saved + i * 4 * hid, h + i * hid,
                     di, di + hid, di + 2 * hid, dg, dg + hid, dg + 2 * hid, direct + i * hid, hid);
    }
}

/* An importable module, so that the build and the install place it like any extension; the
 * functions above are called through ctypes (fused_gru.py), found via this module's __file__. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused_gru",
                                    "Fused GRU step kernels (called through ctypes).", -1, NULL};

PyMODINIT_FUNC PyInit__fused_gru(void) { return PyModule_Create(&module); }
