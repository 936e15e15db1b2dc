// twa's sparse-pair 2-simplicial attention with Slot Attention's competition, compiled for the CPU (twa.pair_kernel,
// nbs/12_pair_kernel.ipynb). Built with torch.utils.cpp_extension.load from this file, like band_kernel.cpp.
//
// For each key/value head b and query head g, queries i < n, and the allowed pairs (j, k) listed row by row
// (row_ptr [n1 + 1], cols [nnz]: the pairs of row j are cols[row_ptr[j] .. row_ptr[j + 1])):
//   L_ijk = qs_i · (k1_j ⊙ k2_k)                   base-2 logits (qs holds scale · log2(e) · q)
//   a_ijk = 2^L_ijk / Σ_i' 2^L_i'jk                 the softmax over the queries (competition), per pair
//   w_ijk = a_ijk + EPS
//   o_i   = Σ_jk w_ijk (v1_j ⊙ v2_k) / Σ_jk w_ijk   the per-query renormalisation
// Work per pair is O(n·d); the forward keeps each pair's n weights for the backward, nothing of size [pairs, d].
// Row j's sums over k are gathered first and multiplied by k1_j or v1_j once per row (DESIGN.md's efficient form).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>
using at::Tensor;

constexpr double EPS = 1e-8;                   // twa.chunked.EPS
constexpr double LN2 = 0.6931471805599453;

template <typename T> inline T dot(const T* a, const T* b, int64_t d) {
  T s = 0;
  #pragma omp simd reduction(+:s)
  for (int64_t x = 0; x < d; ++x) s += a[x] * b[x];
  return s;
}
template <typename T> inline void axpy(T* y, T a, const T* x, int64_t d) {      // y += a·x
  #pragma omp simd
  for (int64_t x_ = 0; x_ < d; ++x_) y[x_] += a * x[x_];
}
template <typename T> inline void mul(T* y, const T* a, const T* b, int64_t d) { // y = a ⊙ b
  #pragma omp simd
  for (int64_t x = 0; x < d; ++x) y[x] = a[x] * b[x];
}
template <typename T> inline void add_mul(T* y, const T* a, const T* b, int64_t d) {   // y += a ⊙ b
  #pragma omp simd
  for (int64_t x = 0; x < d; ++x) y[x] += a[x] * b[x];
}


// out[i] = A_i · b for the n rows of A [n, d], four rows at a time so that each load of b serves four products.
template <typename T> inline void dots(T* out, const T* A, int64_t n, const T* b, int64_t d) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T *a0 = A + i * d, *a1 = a0 + d, *a2 = a1 + d, *a3 = a2 + d;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    #pragma omp simd reduction(+:s0, s1, s2, s3)
    for (int64_t x = 0; x < d; ++x) { const T bx = b[x]; s0 += a0[x] * bx; s1 += a1[x] * bx; s2 += a2[x] * bx; s3 += a3[x] * bx; }
    out[i] = s0; out[i + 1] = s1; out[i + 2] = s2; out[i + 3] = s3;
  }
  for (; i < n; ++i) out[i] = dot(A + i * d, b, d);
}

// The competition of one pair over the n queries of one head: L [n], base-2 logits in, their softmax a out.
template <typename T> inline void weights(T* L, int64_t n) {
  T m = L[0];
  for (int64_t i = 1; i < n; ++i) m = L[i] > m ? L[i] : m;
  T s = 0;
  for (int64_t i = 0; i < n; ++i) { L[i] = std::exp2(L[i] - m); s += L[i]; }
  const T r = T(1) / s;
  for (int64_t i = 0; i < n; ++i) L[i] = L[i] * r;
}

// qs [B, G, n, d], k1 v1 [B, n1, d], k2 v2 [B, n2, d] (contiguous) -> o [B, G, n, d], den [B, G, n] (Σ_jk w_ijk) and
// probs [B, G, pairs, n] (each pair's softmax over the queries, kept for the backward: pairs · n numbers, not pairs · d).
std::vector<Tensor> forward(Tensor qs, Tensor k1, Tensor k2, Tensor v1, Tensor v2, Tensor row_ptr, Tensor cols) {
  const int64_t B = qs.size(0), G = qs.size(1), n = qs.size(2), d = qs.size(3), n1 = k1.size(1), n2 = k2.size(1);
  const int64_t nnz = cols.size(0);
  Tensor o = at::zeros_like(qs), den = at::zeros({B, G, n}, qs.options()), probs = at::empty({B, G, nnz, n}, qs.options());
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const int64_t* cs = cols.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(qs.scalar_type(), "pair_forward", [&] {
    using T = scalar_t;
    at::parallel_for(0, B * G, 1, [&](int64_t lo, int64_t hi) {
      std::vector<T> qk1(n * d), acc(n * d);
      for (int64_t bg = lo; bg < hi; ++bg) {
        const int64_t b = bg / G;
        const T* q = qs.data_ptr<T>() + bg * n * d;
        const T *K1 = k1.data_ptr<T>() + b * n1 * d, *K2 = k2.data_ptr<T>() + b * n2 * d;
        const T *V1 = v1.data_ptr<T>() + b * n1 * d, *V2 = v2.data_ptr<T>() + b * n2 * d;
        T* num = o.data_ptr<T>() + bg * n * d;
        T* dn = den.data_ptr<T>() + bg * n;
        T* pr = probs.data_ptr<T>() + bg * nnz * n;
        for (int64_t j = 0; j < n1; ++j) {
          if (rp[j] == rp[j + 1]) continue;
          for (int64_t i = 0; i < n; ++i) mul(&qk1[i * d], q + i * d, K1 + j * d, d);      // qs_i ⊙ k1_j
          std::fill(acc.begin(), acc.end(), T(0));
          for (int64_t p = rp[j]; p < rp[j + 1]; ++p) {
            const T* k2k = K2 + cs[p] * d;
            const T* v2k = V2 + cs[p] * d;
            T* a = pr + p * n;
            dots(a, qk1.data(), n, k2k, d);
            weights(a, n);
            for (int64_t i = 0; i < n; ++i) { const T w = a[i] + T(EPS); dn[i] += w; axpy(&acc[i * d], w, v2k, d); }   // Σ_k w_ijk v2_k
          }
          for (int64_t i = 0; i < n; ++i) add_mul(num + i * d, &acc[i * d], V1 + j * d, d);  // + v1_j ⊙ Σ_k w_ijk v2_k
        }
        for (int64_t i = 0; i < n; ++i) {
          const T r = dn[i] > 0 ? T(1) / dn[i] : T(0);
          for (int64_t x = 0; x < d; ++x) num[i * d + x] *= r;
        }
      }
    });
  });
  return {o, den, probs};
}

// The gradients of `forward` given dO [B, G, n, d] and its outputs o, den, probs: dqs, dk1, dk2, dv1, dv2.
// With dnum_i = dO_i / den_i and dden_i = -(dO_i · o_i) / den_i, for each pair:
//   dw_i = dnum_i · (v1_j ⊙ v2_k) + dden_i,  dL_i = ln2 · a_i (dw_i - Σ_i' a_i' dw_i')
//   dqs_i += dL_i (k1_j ⊙ k2_k); dk1_j += Σ_i dL_i qs_i ⊙ k2_k; dk2_k += Σ_i dL_i qs_i ⊙ k1_j
//   dv1_j += Σ_i w_i dnum_i ⊙ v2_k;  dv2_k += Σ_i w_i dnum_i ⊙ v1_j
std::vector<Tensor> backward(Tensor dO, Tensor qs, Tensor k1, Tensor k2, Tensor v1, Tensor v2, Tensor row_ptr, Tensor cols, Tensor o, Tensor den, Tensor probs) {
  const int64_t B = qs.size(0), G = qs.size(1), n = qs.size(2), d = qs.size(3), n1 = k1.size(1), n2 = k2.size(1), nnz = cols.size(0);
  Tensor dqs = at::zeros_like(qs), dk1 = at::zeros_like(k1), dk2 = at::zeros_like(k2), dv1 = at::zeros_like(v1), dv2 = at::zeros_like(v2);
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const int64_t* cs = cols.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(qs.scalar_type(), "pair_backward", [&] {
    using T = scalar_t;
    at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {       // by key/value head: every write to dk2, dv2 stays in its slice
      std::vector<T> qk1(n * d), dnv1(n * d), dnum(n * d), dden(n), accv(n * d), acck(n * d), dw(n), dL(n);
      for (int64_t b = lo; b < hi; ++b) {
        const T *K1 = k1.data_ptr<T>() + b * n1 * d, *K2 = k2.data_ptr<T>() + b * n2 * d;
        const T *V1 = v1.data_ptr<T>() + b * n1 * d, *V2 = v2.data_ptr<T>() + b * n2 * d;
        T *dK1 = dk1.data_ptr<T>() + b * n1 * d, *dK2 = dk2.data_ptr<T>() + b * n2 * d;
        T *dV1 = dv1.data_ptr<T>() + b * n1 * d, *dV2 = dv2.data_ptr<T>() + b * n2 * d;
        for (int64_t g = 0; g < G; ++g) {
          const int64_t bg = b * G + g;
          const T* q = qs.data_ptr<T>() + bg * n * d;
          T* dq = dqs.data_ptr<T>() + bg * n * d;
          const T* pr = probs.data_ptr<T>() + bg * nnz * n;
          const T *g_o = dO.data_ptr<T>() + bg * n * d, *out = o.data_ptr<T>() + bg * n * d, *dn = den.data_ptr<T>() + bg * n;
          for (int64_t i = 0; i < n; ++i) {
            const T r = dn[i] > 0 ? T(1) / dn[i] : T(0);
            for (int64_t x = 0; x < d; ++x) dnum[i * d + x] = g_o[i * d + x] * r;
            dden[i] = -dot(g_o + i * d, out + i * d, d) * r;
          }
          for (int64_t j = 0; j < n1; ++j) {
            if (rp[j] == rp[j + 1]) continue;
            for (int64_t i = 0; i < n; ++i) { mul(&qk1[i * d], q + i * d, K1 + j * d, d); mul(&dnv1[i * d], &dnum[i * d], V1 + j * d, d); }
            std::fill(accv.begin(), accv.end(), T(0));
            std::fill(acck.begin(), acck.end(), T(0));
            for (int64_t p = rp[j]; p < rp[j + 1]; ++p) {
              const int64_t k = cs[p];
              const T *k2k = K2 + k * d, *v2k = V2 + k * d;
              const T* a = pr + p * n;
              dots(dw.data(), dnv1.data(), n, v2k, d);
              T s = 0;
              for (int64_t i = 0; i < n; ++i) { dw[i] += dden[i]; s += a[i] * dw[i]; }
              for (int64_t i = 0; i < n; ++i) dL[i] = T(LN2) * a[i] * (dw[i] - s);
              for (int64_t i = 0; i < n; ++i) {
                const T w = a[i] + T(EPS);
                axpy(dV2 + k * d, w, &dnv1[i * d], d);        // Σ_i w_i dnum_i ⊙ v1_j
                axpy(&accv[i * d], w, v2k, d);                // Σ_k w_ik v2_k, for dv1_j
                axpy(dK2 + k * d, dL[i], &qk1[i * d], d);     // Σ_i dL_i qs_i ⊙ k1_j
                axpy(&acck[i * d], dL[i], k2k, d);            // Σ_k dL_ik k2_k, for dqs_i and dk1_j
              }
            }
            for (int64_t i = 0; i < n; ++i) {
              add_mul(dV1 + j * d, &dnum[i * d], &accv[i * d], d);
              add_mul(dq + i * d, K1 + j * d, &acck[i * d], d);
              add_mul(dK1 + j * d, q + i * d, &acck[i * d], d);
            }
          }
        }
      }
    });
  });
  return {dqs, dk1, dk2, dv1, dv2};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "Sparse-pair 2-simplicial attention with competition over queries: o, den, probs");
  m.def("backward", &backward, "Its gradients: dqs, dk1, dk2, dv1, dv2");
}
