#ifndef RASTRO_VERSION_H
#define RASTRO_VERSION_H
#define RASTRO_VERSION "0.1.0"
#endif
