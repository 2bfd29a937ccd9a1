#ifndef MF_VERSION_H
#define MF_VERSION_H
#define MF_VERSION "0.1.0"
#endif
