// twa's windowed 2-simplicial steps compiled for the CPU (twa.cpu_kernel, nbs/11_cpu_kernel.ipynb).
// Built with torch.utils.cpp_extension.load from this file; the extension's name hashes this source, the flags, the CPU and torch's version.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <limits>
#include <vector>
using at::Tensor;

// ==============================================================================================================
// exp2_rows: the softmax's elementwise part, the band's zeros, the row sums or dS, in one pass over a query's block.

// A step of a windowed call: heads [h0, h1), queries [i0, i0 + c), rows r0 .. r0 + rr of each query's window.
struct Step { int64_t h0, h1, i0, c, r0, rr; };

// logits [rows = Bp·G·c·rr, Cp] -> P = 2^(logit + off[b, g, u]) in place. With `band` (no bias added), P = 0 outside the
// band u <= col < u + C, in the padding columns col < lead_col and in the padding rows u + r < lead_row.
// sums[b, g, u] (strides ss) = (first ? 0 : sums) + Σ_{r, col} P. With `dp`, also dS = P·(dP - D[b, g, u]) into dp.
template <typename T>
void exp2_rows(T* lg, const T* off, int64_t of_b, int64_t of_g, int64_t of_u, T* dp, const T* D, int64_t ds_b, int64_t ds_g, T* sums, int64_t ss_b, int64_t ss_g,
               int64_t Bp, int64_t G, int64_t c, int64_t rr, int64_t Cp, int64_t C, int64_t lead_col, int64_t lead_row, bool band, bool first) {
  const int64_t block = rr * Cp;                                            // one query's logits, contiguous
  at::parallel_for(0, Bp * G * c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t b = q / (G * c), g = (q / c) % G, u = q % c;
      T* p = lg + q * block;
      const T o = off[b * of_b + g * of_g + u * of_u];
      const T lowest = std::numeric_limits<T>::min_exponent, highest = std::numeric_limits<T>::max_exponent - 2;   // locals: vectorizable
      #pragma omp simd
      for (int64_t j = 0; j < block; ++j) {                                 // arguments clamped to where 2^x is a normal number,
        const T x = p[j] + o;                                               // so vector exp2 never falls back to scalar calls
        const T y = std::exp2(x < lowest ? lowest : x > highest ? highest : x);
        p[j] = x < lowest ? T(0) : y;
      }
      if (band) {
        const int64_t a = std::max(u, lead_col), z = std::min(u + C, Cp);
        for (int64_t r = 0; r < rr; ++r) {
          T* row = p + r * Cp;
          const int64_t zr = u + r < lead_row ? 0 : z;                      // a padding row: nothing allowed
          for (int64_t k = 0; k < std::min(a, Cp); ++k) row[k] = 0;
          for (int64_t k = std::max(zr, a); k < Cp; ++k) row[k] = 0;
        }
      }
      if (sums) {
        T total = 0;
        #pragma omp simd reduction(+:total)
        for (int64_t j = 0; j < block; ++j) total += p[j];
        T* s = sums + b * ss_b + g * ss_g + u; *s = first ? total : *s + total;
      }
      if (dp) {
        T* dq = dp + q * block;
        const T Dq = D[b * ds_b + g * ds_g + u];
        #pragma omp simd
        for (int64_t j = 0; j < block; ++j) dq[j] = p[j] * (dq[j] - Dq);
      }
    }
  });
}

// ==============================================================================================================
// The products around the GEMMs: mul_rows makes a GEMM operand from a query's vector and its window's rows;
// add_row_products is its transpose for the queries (sum over the window's rows).

// out[b, g, u, r, :d] = x[b, g, u, :d] ⊙ y[b, u + r, :d]   (out contiguous [Bp, G, c, rr, d])
template <typename T>
void mul_rows(T* out, const T* x, int64_t x_b, int64_t x_g, int64_t x_u, const T* y, int64_t y_b, int64_t y_p,
              int64_t Bp, int64_t G, int64_t c, int64_t rr, int64_t d) {
  at::parallel_for(0, Bp * G * c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t b = q / (G * c), g = (q / c) % G, u = q % c;
      const T* xq = x + b * x_b + g * x_g + u * x_u;
      for (int64_t r = 0; r < rr; ++r) {
        T* o = out + (q * rr + r) * d; const T* yr = y + b * y_b + (u + r) * y_p;
        #pragma omp simd
        for (int64_t k = 0; k < d; ++k) o[k] = xq[k] * yr[k];
      }
    }
  });
}

// out[b, g, u, :d] = (first ? 0 : out) + Σ_r a[b, g, u, r, :d] ⊙ x[b, u + r, :d]   (a contiguous [Bp, G, c, rr, d])
template <typename T>
void add_row_products(T* out, int64_t o_b, int64_t o_g, int64_t o_u, const T* a, const T* x, int64_t x_b, int64_t x_p,
                      int64_t Bp, int64_t G, int64_t c, int64_t rr, int64_t d, bool first) {
  at::parallel_for(0, Bp * G * c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t b = q / (G * c), g = (q / c) % G, u = q % c;
      T* o = out + b * o_b + g * o_g + u * o_u;
      const T* aq = a + q * rr * d;
      const T* xq = x + b * x_b + u * x_p;
      if (first) for (int64_t k = 0; k < d; ++k) o[k] = 0;
      for (int64_t r = 0; r < rr; ++r) {
        const T* ar = aq + r * d; const T* xr = xq + r * x_p;
        #pragma omp simd
        for (int64_t k = 0; k < d; ++k) o[k] += ar[k] * xr[k];
      }
    }
  });
}

// ==============================================================================================================
// The rows' gradients: row i0 + u + r gets a term from every query u of the tile whose window holds it, so
// fold_row_products runs one head per thread and adds in place. diagonal_offsets is each query's first offset, the logit of pair (i, i).

// dst[b, u + r, :d] += Σ_g a[b, g, u, r, :d] ⊙ x[b, g, u, :d]   (a contiguous [Bp, G, c, rr, d]; one thread per head)
template <typename T>
void fold_row_products(T* dst, int64_t d_b, int64_t d_p, const T* a, const T* x, int64_t x_b, int64_t x_g, int64_t x_u,
                       int64_t Bp, int64_t G, int64_t c, int64_t rr, int64_t d) {
  at::parallel_for(0, Bp, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t u = 0; u < c; ++u) {
          const T* xu = x + b * x_b + g * x_g + u * x_u;
          const T* au = a + ((b * G + g) * c + u) * rr * d;
          for (int64_t r = 0; r < rr; ++r) {
            T* o = dst + b * d_b + (u + r) * d_p; const T* ar = au + r * d;
            #pragma omp simd
            for (int64_t k = 0; k < d; ++k) o[k] += ar[k] * xu[k];
          }
        }
  });
}

// m[b, g, i] = Σ_{k<d} qx[b, g, i, k] k1x[b, R - 1 + i, k] k2x[b, C - 1 + i, k], the logit of pair (i, i); qx[b, g, i, d] = -m.
template <typename T>
void diagonal_offsets(T* qx, const T* k1x, const T* k2x, T* m, int64_t B, int64_t G, int64_t n, int64_t d, int64_t R, int64_t C) {
  const int64_t e = d + 1, L1 = R - 1 + n, L2 = C - 1 + n;
  at::parallel_for(0, B * G * n, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t b = q / (G * n), i = q % n;
      T* x = qx + q * e; const T* y = k1x + (b * L1 + R - 1 + i) * e; const T* z = k2x + (b * L2 + C - 1 + i) * e;
      T s = 0;
      #pragma omp simd reduction(+:s)
      for (int64_t k = 0; k < d; ++k) s += x[k] * y[k] * z[k];
      m[q] = s; x[d] = -s;
    }
  });
}

// ==============================================================================================================
// One step's views and its logits: q ⊙ k1 against the tile's columns of k2 (one GEMM), a user mask's bias if any, then exp2_rows.

// The tensors of one step (views), buffers shared by all steps.
struct StepViews {
  Step s; int64_t Bp, G, Cp, M, d, R, C;
  Tensor q, k1, v1, k2t, v2t;      // q [Bp, G, c, e]; k1, v1 from row i0 + r0 on [Bp, ·, ·]; k2t, v2t the step's columns [Bp, Cp, ·]
  StepViews(const Step& s, const Tensor& qx, const Tensor& k1x, const Tensor& k2x, const Tensor& v1p, const Tensor& v2p, int64_t R, int64_t C)
    : s(s), Bp(s.h1 - s.h0), G(qx.size(1)), Cp(s.c + C - 1), M(qx.size(1) * s.c * s.rr), d(v1p.size(2)), R(R), C(C) {
    q = qx.slice(0, s.h0, s.h1).slice(2, s.i0, s.i0 + s.c);
    k1 = k1x.slice(0, s.h0, s.h1).slice(1, s.i0 + s.r0);
    v1 = v1p.slice(0, s.h0, s.h1).slice(1, s.i0 + s.r0);
    k2t = k2x.slice(0, s.h0, s.h1).slice(1, s.i0, s.i0 + Cp);
    v2t = v2p.slice(0, s.h0, s.h1).slice(1, s.i0, s.i0 + Cp);
  }
  // x [Bp, G, c, ≥d] ⊙ the step's rows of y -> out [Bp, G, c, rr, d]
  template <typename T> Tensor mul(Tensor& buf, const Tensor& x, const Tensor& y) const {
    Tensor out = buf.resize_({Bp, G, s.c, s.rr, d});
    mul_rows<T>(out.data_ptr<T>(), x.data_ptr<T>(), x.stride(0), x.stride(1), x.stride(2), y.data_ptr<T>(), y.stride(0), y.stride(1), Bp, G, s.c, s.rr, d);
    return out.view({Bp, M, d});
  }
  // 2^(logit - offset) [Bp, M, Cp] from q ⊙ k1 [Bp, M, d], 0 where not allowed: where `bias` (a user mask's) is -inf,
  // or without one outside the band and in the padding; with dp, dp becomes dS = P (dP - D)
  template <typename T> Tensor probs(Tensor& buf, const Tensor& qk1, const c10::optional<Tensor>& bias, Tensor* dp, const Tensor* D, Tensor* sums, bool first) const {
    Tensor lg = buf.resize_({Bp, M, Cp});
    at::bmm_out(lg, qk1, k2t.slice(2, 0, d).transpose(1, 2));
    if (bias.has_value()) lg.view({Bp, G, s.c, s.rr, Cp}).add_(*bias);
    const T* off = q.data_ptr<T>() + d;
    exp2_rows<T>(lg.data_ptr<T>(), off, q.stride(0), q.stride(1), q.stride(2), dp ? dp->data_ptr<T>() : nullptr,
                 D ? D->data_ptr<T>() : nullptr, D ? D->stride(0) : 0, D ? D->stride(1) : 0,
                 sums ? sums->data_ptr<T>() : nullptr, sums ? sums->stride(0) : 0, sums ? sums->stride(1) : 0,
                 Bp, G, s.c, s.rr, Cp, C, C - 1 - s.i0, R - 1 - s.i0 - s.r0, !bias.has_value(), first);
    return lg;
  }
};

// ==============================================================================================================
// The steps of band_steps, made here from the Band (R, C, ci, rc, bc), in the same order; forward_steps writes the offsets m
// (also into the queries' last column), the sums l and the unnormalized output acc, as band_forward's first pass does.

static void check_inputs(std::initializer_list<Tensor> ts) {
  const auto dtype = ts.begin()->scalar_type();
  for (const auto& t : ts)
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == dtype, "twa's CPU kernel takes contiguous CPU tensors of one dtype");
}

// The steps' operand and logit buffers, kept by each thread from call to call: fresh ones would cost page faults
// on every call (a few MB: the largest step's logits and operands).
static Tensor& buffer(int i, const Tensor& like) {
  static thread_local Tensor buffers[6];
  if (!buffers[i].defined() || buffers[i].scalar_type() != like.scalar_type()) buffers[i] = at::empty({0}, like.options());
  return buffers[i];
}

// The steps of `band_steps`: tiles of ci queries and bc heads, their rows in chunks of rc; one bias per step if any.
static std::vector<Step> band_steps(int64_t B, int64_t n, int64_t R, int64_t ci, int64_t rc, int64_t bc, size_t biases) {
  std::vector<Step> out;
  for (int64_t h0 = 0; h0 < B; h0 += bc)
    for (int64_t i0 = 0; i0 < n; i0 += ci)
      for (int64_t r0 = 0; r0 < R; r0 += rc) out.push_back({h0, std::min(h0 + bc, B), i0, std::min(ci, n - i0), r0, std::min(rc, R - r0)});
  TORCH_CHECK(biases == 0 || biases == out.size(), "twa's CPU kernel: got ", biases, " step biases for ", out.size(), " steps");
  return out;
}

static c10::optional<Tensor> bias_of(const std::vector<c10::optional<Tensor>>& biases, size_t i) { return biases.empty() ? c10::nullopt : biases[i]; }

// Forward of a windowed call: m, l [B, G, n] and acc [B, G, n, d] as in `band_forward`, qx's last column set to -m.
void forward_steps(Tensor qx, Tensor k1x, Tensor k2x, Tensor v1p, Tensor v2p, Tensor m, Tensor l, Tensor acc,
                   std::vector<c10::optional<Tensor>> biases, int64_t R, int64_t C, int64_t ci, int64_t rc, int64_t bc) {
  check_inputs({qx, k1x, k2x, v1p, v2p, m, l, acc});
  Tensor &qk1_buf = buffer(0, qx), &lg_buf = buffer(1, qx), &pv_buf = buffer(2, qx);
  const auto steps = band_steps(qx.size(0), qx.size(2), R, ci, rc, bc, biases.size());
  AT_DISPATCH_FLOATING_TYPES(qx.scalar_type(), "forward_steps", [&] {
    diagonal_offsets<scalar_t>(qx.data_ptr<scalar_t>(), k1x.data_ptr<scalar_t>(), k2x.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
                               qx.size(0), qx.size(1), qx.size(2), v1p.size(2), R, C);
    for (size_t i = 0; i < steps.size(); ++i) {
      const StepViews v(steps[i], qx, k1x, k2x, v1p, v2p, R, C);
      const auto& s = v.s;
      Tensor li = l.slice(0, s.h0, s.h1).slice(2, s.i0, s.i0 + s.c), acci = acc.slice(0, s.h0, s.h1).slice(2, s.i0, s.i0 + s.c);
      Tensor p = v.probs<scalar_t>(lg_buf, v.mul<scalar_t>(qk1_buf, v.q, v.k1), bias_of(biases, i), nullptr, nullptr, &li, s.r0 == 0);
      Tensor pv = pv_buf.resize_({v.Bp, v.M, v.d});
      at::bmm_out(pv, p, v.v2t);                                                                   // P_ij: @ V2
      add_row_products<scalar_t>(acci.data_ptr<scalar_t>(), acci.stride(0), acci.stride(1), acci.stride(2), pv.data_ptr<scalar_t>(),
                                 v.v1.data_ptr<scalar_t>(), v.v1.stride(0), v.v1.stride(1), v.Bp, v.G, s.c, s.rr, v.d, s.r0 == 0);
    }
  });
}

// ==============================================================================================================
// backward_steps recomputes each step from the log-sum-exp in the queries' last column.

// Backward of a windowed call, qx's last column holding -lse: adds to dqs [B, G, n, d] and the padded dk1x, dk2x, dv1, dv2
// the gradients w.r.t. the base-2 logits' inputs (the caller scales them).
void backward_steps(Tensor dO, Tensor D, Tensor qx, Tensor k1x, Tensor k2x, Tensor v1p, Tensor v2p,
                    Tensor dqs, Tensor dk1x, Tensor dk2x, Tensor dv1, Tensor dv2,
                    std::vector<c10::optional<Tensor>> biases, int64_t R, int64_t C, int64_t ci, int64_t rc, int64_t bc) {
  check_inputs({dO, D, qx, k1x, k2x, v1p, v2p, dqs, dk1x, dk2x, dv1, dv2});
  Tensor &qk1_buf = buffer(0, qx), &lg_buf = buffer(1, qx), &pv_buf = buffer(2, qx), &dov1_buf = buffer(3, qx), &dp_buf = buffer(4, qx),
         &cols_buf = buffer(5, qx);
  const auto steps = band_steps(qx.size(0), qx.size(2), R, ci, rc, bc, biases.size());
  AT_DISPATCH_FLOATING_TYPES(qx.scalar_type(), "backward_steps", [&] {
    for (size_t i = 0; i < steps.size(); ++i) {
      const StepViews v(steps[i], qx, k1x, k2x, v1p, v2p, R, C);
      const auto& s = v.s;
      Tensor g = dO.slice(0, s.h0, s.h1).slice(2, s.i0, s.i0 + s.c), Dq = D.slice(0, s.h0, s.h1).slice(2, s.i0, s.i0 + s.c);
      Tensor qk1 = v.mul<scalar_t>(qk1_buf, v.q, v.k1), dov1 = v.mul<scalar_t>(dov1_buf, g, v.v1);       // q_i ⊙ k1_j, dO_i ⊙ v1_j
      Tensor dp = dp_buf.resize_({v.Bp, v.M, v.Cp});
      at::bmm_out(dp, dov1, v.v2t.transpose(1, 2));
      Tensor p = v.probs<scalar_t>(lg_buf, qk1, bias_of(biases, i), &dp, &Dq, nullptr, false);           // dp becomes dS
      Tensor pv = pv_buf.resize_({v.Bp, v.M, v.d}), cols = cols_buf.resize_({v.Bp, v.Cp, v.d});
      at::bmm_out(pv, p, v.v2t);                                                                   // P_ij: @ V2
      Tensor dv1h = dv1.slice(0, s.h0, s.h1).slice(1, s.i0 + s.r0), dk1h = dk1x.slice(0, s.h0, s.h1).slice(1, s.i0 + s.r0);
      fold_row_products<scalar_t>(dv1h.data_ptr<scalar_t>(), dv1h.stride(0), dv1h.stride(1), pv.data_ptr<scalar_t>(),
                                  g.data_ptr<scalar_t>(), g.stride(0), g.stride(1), g.stride(2), v.Bp, v.G, s.c, s.rr, v.d);
      at::bmm_out(cols, p.transpose(1, 2), dov1);
      dv2.slice(0, s.h0, s.h1).slice(1, s.i0, s.i0 + v.Cp).add_(cols);                              // Σ_ij P_ijk (dO_i ⊙ v1_j)
      at::bmm_out(pv, dp, v.k2t.slice(2, 0, v.d));                                                  // Σ_k dS_ijk k2_k
      Tensor dqi = dqs.slice(0, s.h0, s.h1).slice(2, s.i0, s.i0 + s.c);
      add_row_products<scalar_t>(dqi.data_ptr<scalar_t>(), dqi.stride(0), dqi.stride(1), dqi.stride(2), pv.data_ptr<scalar_t>(),
                                 v.k1.data_ptr<scalar_t>(), v.k1.stride(0), v.k1.stride(1), v.Bp, v.G, s.c, s.rr, v.d, false);
      fold_row_products<scalar_t>(dk1h.data_ptr<scalar_t>(), dk1h.stride(0), dk1h.stride(1), pv.data_ptr<scalar_t>(),
                                  v.q.data_ptr<scalar_t>(), v.q.stride(0), v.q.stride(1), v.q.stride(2), v.Bp, v.G, s.c, s.rr, v.d);
      at::bmm_out(cols, dp.transpose(1, 2), qk1);
      dk2x.slice(0, s.h0, s.h1).slice(1, s.i0, s.i0 + v.Cp).slice(2, 0, v.d).add_(cols);            // Σ_ij dS_ijk (q_i ⊙ k1_j)
    }
  });
}

// ==============================================================================================================
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_steps", &forward_steps, "Forward steps of a windowed call");
  m.def("backward_steps", &backward_steps, "Backward steps of a windowed call");
}
