/* token_cmd: `graind token add|list|revoke`, run instead of the agent
 * when graind's first argument is "token". It edits the credentials file
 * (authfile.h) in place, atomically; the agent reads it on SIGHUP. A new
 * token is printed once, on stdout alone, so that it can be captured:
 * `TOKEN=$(graind token add ci --role operator --scope 'team-a-*')`. */
#ifndef GRAIND_TOKEN_CMD_H
#define GRAIND_TOKEN_CMD_H

/* argv[0] is "token". The exit status: 0, 1 (failed), 2 (usage). */
int token_main(int argc, char **argv);

#endif
