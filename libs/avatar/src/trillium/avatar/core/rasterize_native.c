/* Tiled CPU compositor with gsplat 1.5.3 per-pixel semantics (see rasterize_native.py).
 * Plain C + OpenMP, loaded through ctypes; no torch headers, so it builds in about a second. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define ALPHA_THRESHOLD (1.0f / 255.0f)
#define MAX_ALPHA 0.999f
#define MIN_TRANSMITTANCE 1e-4f
#define LANES 8 /* tile_size must be a multiple of LANES */

static int64_t bin_gaussians(int32_t m, const int64_t *order, const float *means2d, const int32_t *radii,
                             int32_t tile_size, int32_t tiles_x, int32_t tiles_y, int32_t *rects,
                             int64_t *offsets, int32_t **list_out) {
    int64_t n_tiles = (int64_t)tiles_x * tiles_y;
    memset(offsets, 0, sizeof(int64_t) * (n_tiles + 1));
    for (int32_t k = 0; k < m; ++k) {
        int64_t g = order[k];
        float mx = means2d[2 * g], my = means2d[2 * g + 1];
        float rx = (float)radii[2 * g], ry = (float)radii[2 * g + 1];
        int32_t x0 = (int32_t)floorf((mx - rx) / tile_size), x1 = (int32_t)ceilf((mx + rx) / tile_size);
        int32_t y0 = (int32_t)floorf((my - ry) / tile_size), y1 = (int32_t)ceilf((my + ry) / tile_size);
        x0 = x0 < 0 ? 0 : (x0 > tiles_x ? tiles_x : x0);
        x1 = x1 < 0 ? 0 : (x1 > tiles_x ? tiles_x : x1);
        y0 = y0 < 0 ? 0 : (y0 > tiles_y ? tiles_y : y0);
        y1 = y1 < 0 ? 0 : (y1 > tiles_y ? tiles_y : y1);
        rects[4 * k] = x0; rects[4 * k + 1] = y0; rects[4 * k + 2] = x1; rects[4 * k + 3] = y1;
        for (int32_t ty = y0; ty < y1; ++ty)
            for (int32_t tx = x0; tx < x1; ++tx) offsets[(int64_t)ty * tiles_x + tx + 1] += 1;
    }
    for (int64_t t = 0; t < n_tiles; ++t) offsets[t + 1] += offsets[t];
    int64_t total = offsets[n_tiles];
    int32_t *list = (int32_t *)malloc(sizeof(int32_t) * (total > 0 ? total : 1));
    int64_t *fill = (int64_t *)malloc(sizeof(int64_t) * (n_tiles + 1));
    memcpy(fill, offsets, sizeof(int64_t) * (n_tiles + 1));
    for (int32_t k = 0; k < m; ++k) {
        for (int32_t ty = rects[4 * k + 1]; ty < rects[4 * k + 3]; ++ty)
            for (int32_t tx = rects[4 * k]; tx < rects[4 * k + 2]; ++tx)
                list[fill[(int64_t)ty * tiles_x + tx]++] = (int32_t)order[k];
    }
    free(fill);
    *list_out = list;
    return total;
}

/* Pixel window of Gaussian g inside the tile at (ox, oy): rows [r0, r1), columns [c0, c1) widened to
 * LANES-wide blocks. Pixels outside cannot reach alpha >= 1/255 (the radius is the opacity-aware
 * 3-sigma-like bound of the projection). Returns 0 if the window is empty. Shared by forward and
 * backward so both see exactly the same pixels. */
static inline int gaussian_window(const float *means2d, const int32_t *radii, int32_t g, int32_t ox, int32_t oy,
                                  int32_t tile_size, int32_t *r0, int32_t *r1, int32_t *c0, int32_t *c1) {
    float mx = means2d[2 * g], my = means2d[2 * g + 1];
    float rx = (float)radii[2 * g], ry = (float)radii[2 * g + 1];
    int32_t a0 = (int32_t)floorf(my - ry - 0.5f) - oy, a1 = (int32_t)ceilf(my + ry - 0.5f) - oy + 1;
    int32_t b0 = (int32_t)floorf(mx - rx - 0.5f) - ox, b1 = (int32_t)ceilf(mx + rx - 0.5f) - ox + 1;
    *r0 = a0 < 0 ? 0 : a0;
    *r1 = a1 > tile_size ? tile_size : a1;
    *c0 = b0 < 0 ? 0 : (b0 / LANES) * LANES;
    b1 = b1 > tile_size ? tile_size : b1;
    *c1 = ((b1 + LANES - 1) / LANES) * LANES;
    return *r0 < *r1 && *c0 < *c1;
}

static inline int row_live(const float *active, int32_t row, int32_t tile_size) {
    float any = 0.0f;
    for (int32_t q = 0; q < tile_size; ++q) any += active[row * tile_size + q];
    return any > 0.0f;
}

/* Returns the number of tile intersections, or -1 on allocation failure. */
int64_t trl_rasterize_forward(int32_t m, const int64_t *order, const float *means2d, const float *conics,
                              const float *opacities, const int32_t *radii, const float *feats,
                              int32_t channels, int32_t width, int32_t height, int32_t tile_size,
                              float *out_feats, float *out_transmittance, int32_t *out_last,
                              int32_t num_threads) {
    int32_t tiles_x = (width + tile_size - 1) / tile_size, tiles_y = (height + tile_size - 1) / tile_size;
    int64_t n_tiles = (int64_t)tiles_x * tiles_y;
    int32_t n_pix = tile_size * tile_size;
    int32_t *rects = (int32_t *)malloc(sizeof(int32_t) * 4 * (m > 0 ? m : 1));
    int64_t *offsets = (int64_t *)malloc(sizeof(int64_t) * (n_tiles + 1));
    int32_t *list = NULL;
    if (!rects || !offsets) return -1;
    int64_t total = bin_gaussians(m, order, means2d, radii, tile_size, tiles_x, tiles_y, rects, offsets, &list);
    free(rects);

#pragma omp parallel num_threads(num_threads)
    {
        float *buf = (float *)malloc(sizeof(float) * n_pix * (channels + 4));
        float *px = buf, *py = buf + n_pix, *trans = buf + 2 * n_pix, *active = buf + 3 * n_pix;
        float *accum = buf + 4 * n_pix;
        int32_t *last = (int32_t *)malloc(sizeof(int32_t) * n_pix);
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < n_tiles; ++tile) {
            int32_t ox = (int32_t)(tile % tiles_x) * tile_size, oy = (int32_t)(tile / tiles_x) * tile_size;
            for (int32_t p = 0; p < n_pix; ++p) {
                px[p] = (float)(ox + p % tile_size) + 0.5f;
                py[p] = (float)(oy + p / tile_size) + 0.5f;
                trans[p] = 1.0f;
                active[p] = 1.0f;
                last[p] = 0;
            }
            memset(accum, 0, sizeof(float) * n_pix * channels);
            int32_t n_active = n_pix, live_r0 = 0, live_r1 = tile_size;
            for (int64_t j = offsets[tile]; j < offsets[tile + 1] && n_active > 0; ++j) {
                int32_t g = list[j];
                float mx = means2d[2 * g], my = means2d[2 * g + 1];
                float a = conics[3 * g], b = conics[3 * g + 1], c = conics[3 * g + 2], o = opacities[g];
                int32_t r0, r1, c0, c1;
                if (!gaussian_window(means2d, radii, g, ox, oy, tile_size, &r0, &r1, &c0, &c1)) continue;
                r0 = r0 < live_r0 ? live_r0 : r0;
                r1 = r1 > live_r1 ? live_r1 : r1;
                if (r0 >= r1) continue;
                int32_t rank = (int32_t)(j - offsets[tile]) + 1;
                const float *value = feats + (int64_t)g * channels;
                int32_t stopped = 0;
                for (int32_t r = r0; r < r1; ++r) {
                    for (int32_t base = r * tile_size + c0; base < r * tile_size + c1; base += LANES) {
                        float w[LANES];
                        int32_t block_stopped = 0, block_touched = 0;
#pragma omp simd reduction(+ : block_stopped, block_touched)
                        for (int32_t l = 0; l < LANES; ++l) {
                            int32_t p = base + l;
                            float dx = px[p] - mx, dy = py[p] - my;
                            float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                            /* clamping sigma keeps expf on its fast vector path; alpha < 1/255 there anyway */
                            float alpha = fminf(MAX_ALPHA, o * expf(-fminf(sigma, 30.0f)));
                            int valid = (sigma >= 0.0f) & (alpha >= ALPHA_THRESHOLD) & (active[p] > 0.0f);
                            float next_t = trans[p] * (1.0f - alpha);
                            int stop = valid & (next_t <= MIN_TRANSMITTANCE);
                            int contrib = valid & !stop;
                            w[l] = contrib ? alpha * trans[p] : 0.0f;
                            trans[p] = contrib ? next_t : trans[p];
                            last[p] = contrib ? rank : last[p];
                            active[p] = stop ? 0.0f : active[p];
                            block_stopped += stop;
                            block_touched += contrib;
                        }
                        stopped += block_stopped;
                        if (block_touched == 0) continue;
                        for (int32_t f = 0; f < channels; ++f) {
                            float *acc = accum + (int64_t)f * n_pix + base;
                            float v = value[f];
#pragma omp simd
                            for (int32_t l = 0; l < LANES; ++l) acc[l] += w[l] * v;
                        }
                    }
                }
                n_active -= stopped;
                if (stopped > 0) {
                    /* shrink the row window to rows that still have a live pixel */
                    while (live_r0 < live_r1 && !row_live(active, live_r0, tile_size)) ++live_r0;
                    while (live_r1 > live_r0 && !row_live(active, live_r1 - 1, tile_size)) --live_r1;
                }
            }
            for (int32_t p = 0; p < n_pix; ++p) {
                int32_t x = ox + p % tile_size, y = oy + p / tile_size;
                if (x >= width || y >= height) continue;
                int64_t pix = (int64_t)y * width + x;
                out_transmittance[pix] = trans[p];
                out_last[pix] = last[p];
                for (int32_t f = 0; f < channels; ++f) out_feats[pix * channels + f] = accum[(int64_t)f * n_pix + p];
            }
        }
        free(buf);
        free(last);
    }
    free(offsets);
    free(list);
    return total;
}

/* Gradients of (out_feats, out_transmittance) with respect to the screen-space Gaussians.
 * Walks each tile's list back to front, recovering the transmittance before every Gaussian by
 * division (alpha <= 0.999, so 1 - alpha >= 1e-3), exactly like 3DGS / gsplat's backward pass.
 * A Gaussian contributed to a pixel iff its rank in the tile list is <= out_last[pixel] and it
 * passes the same alpha tests as in the forward pass. Clamped alphas (o e^-sigma > 0.999) pass no
 * gradient to opacity or shape, as in gsplat. Outputs are accumulated (+=) into zeroed arrays.
 * Returns 0, or -1 on allocation failure. */
int64_t trl_rasterize_backward(int32_t m, const int64_t *order, const float *means2d, const float *conics,
                               const float *opacities, const int32_t *radii, const float *feats,
                               int32_t channels, int32_t width, int32_t height, int32_t tile_size,
                               const float *out_transmittance, const int32_t *out_last,
                               const float *grad_feats, const float *grad_transmittance, int32_t num_gaussians,
                               float *grad_means2d, float *grad_conics, float *grad_opacities,
                               float *grad_gaussian_feats, int32_t num_threads) {
    int32_t tiles_x = (width + tile_size - 1) / tile_size, tiles_y = (height + tile_size - 1) / tile_size;
    int64_t n_tiles = (int64_t)tiles_x * tiles_y;
    int32_t n_pix = tile_size * tile_size;
    int32_t stride = 6 + channels; /* per-Gaussian gradient record: mx, my, a, b, c, o, feats... */
    int32_t *rects = (int32_t *)malloc(sizeof(int32_t) * 4 * (m > 0 ? m : 1));
    int64_t *offsets = (int64_t *)malloc(sizeof(int64_t) * (n_tiles + 1));
    float *thread_grads = (float *)calloc((size_t)num_threads * num_gaussians * stride, sizeof(float));
    int32_t *list = NULL;
    if (!rects || !offsets || !thread_grads) return -1;
    bin_gaussians(m, order, means2d, radii, tile_size, tiles_x, tiles_y, rects, offsets, &list);
    free(rects);

#pragma omp parallel num_threads(num_threads)
    {
        float *grads = thread_grads + (size_t)omp_get_thread_num() * num_gaussians * stride;
        float *buf = (float *)malloc(sizeof(float) * n_pix * (5 + 2 * channels));
        float *px = buf, *py = buf + n_pix, *trans = buf + 2 * n_pix, *t_final = buf + 3 * n_pix;
        float *g_trans = buf + 4 * n_pix, *g_feat = buf + 5 * n_pix, *later = buf + (5 + channels) * n_pix;
        int32_t *last = (int32_t *)malloc(sizeof(int32_t) * n_pix);
        float *g_value = (float *)malloc(sizeof(float) * channels);
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < n_tiles; ++tile) {
            int32_t ox = (int32_t)(tile % tiles_x) * tile_size, oy = (int32_t)(tile / tiles_x) * tile_size;
            int32_t max_last = 0;
            for (int32_t p = 0; p < n_pix; ++p) {
                int32_t x = ox + p % tile_size, y = oy + p / tile_size;
                int inside = x < width && y < height;
                int64_t pix = (int64_t)y * width + x;
                px[p] = (float)x + 0.5f;
                py[p] = (float)y + 0.5f;
                trans[p] = inside ? out_transmittance[pix] : 1.0f;
                t_final[p] = trans[p];
                last[p] = inside ? out_last[pix] : 0;
                g_trans[p] = inside ? grad_transmittance[pix] : 0.0f;
                for (int32_t f = 0; f < channels; ++f) {
                    g_feat[f * n_pix + p] = inside ? grad_feats[pix * channels + f] : 0.0f;
                    later[f * n_pix + p] = 0.0f;
                }
                max_last = last[p] > max_last ? last[p] : max_last;
            }
            for (int64_t j = offsets[tile] + max_last - 1; j >= offsets[tile]; --j) {
                int32_t g = list[j];
                int32_t rank = (int32_t)(j - offsets[tile]) + 1;
                int32_t r0, r1, c0, c1;
                if (!gaussian_window(means2d, radii, g, ox, oy, tile_size, &r0, &r1, &c0, &c1)) continue;
                float mx = means2d[2 * g], my = means2d[2 * g + 1];
                float a = conics[3 * g], b = conics[3 * g + 1], c = conics[3 * g + 2], o = opacities[g];
                const float *value = feats + (int64_t)g * channels;
                float s_mx = 0.0f, s_my = 0.0f, s_a = 0.0f, s_b = 0.0f, s_c = 0.0f, s_o = 0.0f;
                for (int32_t f = 0; f < channels; ++f) g_value[f] = 0.0f;
                for (int32_t r = r0; r < r1; ++r) {
                    for (int32_t base = r * tile_size + c0; base < r * tile_size + c1; base += LANES) {
                        float w[LANES], t_before[LANES], one_minus[LANES], d_alpha[LANES], on[LANES];
#pragma omp simd
                        for (int32_t l = 0; l < LANES; ++l) {
                            int32_t p = base + l;
                            float dx = px[p] - mx, dy = py[p] - my;
                            float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                            float alpha = fminf(MAX_ALPHA, o * expf(-fminf(sigma, 30.0f)));
                            int contrib = (sigma >= 0.0f) & (alpha >= ALPHA_THRESHOLD) & (rank <= last[p]);
                            on[l] = contrib ? 1.0f : 0.0f;
                            one_minus[l] = 1.0f - alpha;
                            t_before[l] = trans[p] / one_minus[l];
                            w[l] = contrib ? alpha * t_before[l] : 0.0f;
                            d_alpha[l] = 0.0f;
                        }
                        for (int32_t f = 0; f < channels; ++f) {
                            float v = value[f], gv = 0.0f;
                            float *gf = g_feat + (int64_t)f * n_pix + base, *lt = later + (int64_t)f * n_pix + base;
#pragma omp simd reduction(+ : gv)
                            for (int32_t l = 0; l < LANES; ++l) {
                                d_alpha[l] += on[l] * gf[l] * (v * t_before[l] - lt[l] / one_minus[l]);
                                lt[l] += v * w[l];
                                gv += gf[l] * w[l];
                            }
                            g_value[f] += gv;
                        }
#pragma omp simd reduction(+ : s_mx, s_my, s_a, s_b, s_c, s_o)
                        for (int32_t l = 0; l < LANES; ++l) {
                            int32_t p = base + l;
                            float dx = px[p] - mx, dy = py[p] - my;
                            float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                            float vis = expf(-fminf(sigma, 30.0f));
                            float da = d_alpha[l] - on[l] * g_trans[p] * t_final[p] / one_minus[l];
                            float live = (on[l] > 0.0f) & (o * vis <= MAX_ALPHA) ? 1.0f : 0.0f;
                            float d_sigma = -live * da * o * vis;
                            s_o += live * da * vis;
                            s_a += 0.5f * d_sigma * dx * dx;
                            s_b += d_sigma * dx * dy;
                            s_c += 0.5f * d_sigma * dy * dy;
                            s_mx -= d_sigma * (a * dx + b * dy);
                            s_my -= d_sigma * (b * dx + c * dy);
                            trans[p] = on[l] > 0.0f ? t_before[l] : trans[p];
                        }
                    }
                }
                float *rec = grads + (int64_t)g * stride;
                rec[0] += s_mx; rec[1] += s_my; rec[2] += s_a; rec[3] += s_b; rec[4] += s_c; rec[5] += s_o;
                for (int32_t f = 0; f < channels; ++f) rec[6 + f] += g_value[f];
            }
        }
        free(buf);
        free(last);
        free(g_value);
    }
    for (int32_t t = 0; t < num_threads; ++t) {
        const float *grads = thread_grads + (size_t)t * num_gaussians * stride;
        for (int64_t g = 0; g < num_gaussians; ++g) {
            const float *rec = grads + g * stride;
            grad_means2d[2 * g] += rec[0];
            grad_means2d[2 * g + 1] += rec[1];
            grad_conics[3 * g] += rec[2];
            grad_conics[3 * g + 1] += rec[3];
            grad_conics[3 * g + 2] += rec[4];
            grad_opacities[g] += rec[5];
            for (int32_t f = 0; f < channels; ++f) grad_gaussian_feats[g * channels + f] += rec[6 + f];
        }
    }
    free(thread_grads);
    free(offsets);
    free(list);
    return 0;
}
