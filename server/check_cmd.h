/* check_cmd: `graind check`, run instead of the agent when graind's first
 * argument is "check". It reads the database of a state dir without
 * changing it (the agent may be running on it) and reports every damage
 * it finds: SQLite's full integrity_check, every object against its
 * SHA-256, every sample block against its checksum and framing. One line
 * per damage on stdout, a summary last; the exit status says whether
 * anything is damaged. */
#ifndef GRAIND_CHECK_CMD_H
#define GRAIND_CHECK_CMD_H

/* argv[0] is "check". The exit status: 0 (sound), 1 (damage found),
 * 2 (usage, or the database cannot be read). */
int check_main(int argc, char **argv);

#endif
