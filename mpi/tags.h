/* tags.h - every point-to-point message tag of minifuse, in one place.
 *
 * Messages of different streams that may be in flight at once between the same
 * two ranks must have different tags (MPI matches by source, tag, communicator).
 * The values are arbitrary but fixed; they never affect results. */
#ifndef MF_TAGS_H
#define MF_TAGS_H

enum mf_tag {
    MF_TAG_MODEL = 1,          /* activations of the model under evaluation (eval, logits, generate) */
    MF_TAG_REF = 2,            /* activations of a second model, or the full forward of score / fuse */
    MF_TAG_VARIANT = 3,        /* score / Macro Influence: forward with one block removed */
    MF_TAG_SCORE_RESULT = 7,   /* score: depth results from the last rank to rank 0 */
    MF_TAG_TEACHER = 11,       /* distill: teacher activations */
    MF_TAG_STUDENT_FWD = 12,   /* distill: student activations, stage p -> p+1 */
    MF_TAG_STUDENT_BWD = 13,   /* distill: activation gradients, stage p -> p-1 */
    MF_TAG_TIED_EMBED = 21,    /* collective: the two copies of a tied embedding's gradient */
    MF_TAG_NCCL_ID = 22,       /* collective (CUDA build): NCCL id of the tied-embedding pair, first -> last stage */
    MF_TAG_FUSE_X = 40,        /* fuse: a window input to the rank that owns the sample */
    MF_TAG_FUSE_BATCH_X = 41,  /* fuse: a batch element's input to the rank that trains it */
    MF_TAG_FUSE_BATCH_T = 42,  /* fuse: a batch element's teacher output */
    MF_TAG_HIDDEN = 200,       /* distill --hidden: teacher layer k's output is MF_TAG_HIDDEN + k */
};

#endif
