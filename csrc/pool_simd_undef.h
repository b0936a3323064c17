/* Undefine the macros of one instantiation of pool_simd.h: those of its type
 * and, after an instruction set's last type (FCNN_ISA_DONE), those the types
 * of that instruction set share. */
#undef T
#undef SFX
#undef VT
#undef MT
#undef VL
#undef V_LOAD
#undef V_STORE
#undef V_STORE_FIRST
#undef V_MASKLOAD
#undef V_SET1
#undef V_ZERO
#undef V_ADD
#undef V_DIV
#undef V_EVENS
#undef V_ODDS
#undef V_UNSCRAMBLE
#undef V_TAKE
#undef V_BLEND
#undef V_ZIPLO
#undef V_ZIPHI
#undef I_SET1
#undef I_ADD
#undef I_SUB
#undef I_GT
#undef I_MAX0
#undef I_BLEND
#undef I_LANES
#undef I_SIGMA2
#undef IDX_STORE
#undef IDX_STORE_FIRST
#undef I_EQ
#undef V_MASKZ
#undef IDX_NARROW
#undef IDX_LOAD
#undef IDX_MASKLOAD
#ifdef FCNN_ISA_DONE
#undef FCNN_TARGET
#undef IV
#undef I_UNSCRAMBLE
#undef M_ANDNOT
#undef M_OR
#undef M_ANY
#undef FCNN_ISA_DONE
#endif
