/* A test peer that drives libotr 4.1's real state machine (Debian's libotr5), for interop tests of
 * the gateway's OTR v3. It does no networking: test/interop/otr_user.py relays between XMPP and this
 * process. Line protocol (bodies hex-encoded, so any text fits on a line):
 *   stdin:  recv <from-full-jid> <hex>    a message body from the network
 *           send <to-full-jid> <hex>      encrypt (and fragment) a message to that contact
 *           quit
 *   stdout: inject <to> <hex>             a body to send over the network
 *           message <from> <0|1> <hex>    a message for the user (1: it was encrypted)
 *           secure <peer> <fingerprint>   an AKE finished (also a fresh one within a session)
 *           insecure <peer> | finished <peer> | event <peer> <code> <hex> | fp <fingerprint>
 * Usage: libotr_peer ACCOUNT STATE_DIR MAX_MESSAGE_SIZE POLICY(v3|v23)
 * Build: gcc -o libotr_peer libotr_peer.c $(pkg-config --cflags --libs libotr)   (done by the test harness)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libotr/proto.h>
#include <libotr/userstate.h>
#include <libotr/message.h>
#include <libotr/privkey.h>
#include <libotr/instag.h>
#include <libotr/tlv.h>

static OtrlUserState us;
static const char *ACCOUNT;
static const char *PROTO = "xmpp";
static int MMS = 0;
static OtrlPolicy POLICY = OTRL_POLICY_ALLOW_V3 | OTRL_POLICY_WHITESPACE_START_AKE | OTRL_POLICY_ERROR_START_AKE;
static char keyfile[4096], instagfile[4096];

static void put_hex(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) printf("%02x", *p);
}

static char *from_hex(const char *h) {
    size_t n = strlen(h) / 2;
    char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned int b;
        sscanf(h + 2 * i, "%2x", &b);
        out[i] = (char)b;
    }
    out[n] = 0;
    return out;
}

static OtrlPolicy op_policy(void *o, ConnContext *c) { (void)o; (void)c; return POLICY; }
static void op_create_privkey(void *o, const char *acc, const char *proto) { (void)o; otrl_privkey_generate(us, keyfile, acc, proto); }
static int op_is_logged_in(void *o, const char *a, const char *p, const char *r) { (void)o; (void)a; (void)p; (void)r; return 1; }
static void op_inject(void *o, const char *a, const char *p, const char *to, const char *msg) {
    (void)o; (void)a; (void)p;
    printf("inject %s ", to);
    put_hex(msg);
    printf("\n");
    fflush(stdout);
}
static void op_update_context_list(void *o) { (void)o; }
static void op_new_fingerprint(void *o, OtrlUserState u, const char *a, const char *p, const char *who, unsigned char fp[20]) { (void)o; (void)u; (void)a; (void)p; (void)who; (void)fp; }
static void op_write_fingerprints(void *o) { (void)o; }
static void report_secure(ConnContext *c) {
    char human[OTRL_PRIVKEY_FPRINT_HUMAN_LEN];
    if (c->active_fingerprint) otrl_privkey_hash_to_human(human, c->active_fingerprint->fingerprint);
    else strcpy(human, "-");
    printf("secure %s %s\n", c->username, human);
    fflush(stdout);
}
static void op_gone_secure(void *o, ConnContext *c) { (void)o; report_secure(c); }
static void op_gone_insecure(void *o, ConnContext *c) { (void)o; printf("insecure %s\n", c->username); fflush(stdout); }
static void op_still_secure(void *o, ConnContext *c, int is_reply) { (void)o; (void)is_reply; report_secure(c); }
static int op_max_message_size(void *o, ConnContext *c) { (void)o; (void)c; return MMS; }
static void op_handle_msg_event(void *o, OtrlMessageEvent ev, ConnContext *c, const char *message, gcry_error_t err) {
    (void)o; (void)err;
    printf("event %s %d ", c ? c->username : "-", (int)ev);
    put_hex(message ? message : "");
    printf("\n");
    fflush(stdout);
}
static void op_create_instag(void *o, const char *a, const char *p) { (void)o; otrl_instag_generate(us, instagfile, a, p); }

static OtrlMessageAppOps ops = {
    .policy = op_policy,
    .create_privkey = op_create_privkey,
    .is_logged_in = op_is_logged_in,
    .inject_message = op_inject,
    .update_context_list = op_update_context_list,
    .new_fingerprint = op_new_fingerprint,
    .write_fingerprints = op_write_fingerprints,
    .gone_secure = op_gone_secure,
    .gone_insecure = op_gone_insecure,
    .still_secure = op_still_secure,
    .max_message_size = op_max_message_size,
    .handle_msg_event = op_handle_msg_event,
    .create_instag = op_create_instag,
};

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s ACCOUNT STATE_DIR MAX_MESSAGE_SIZE v3|v23\n", argv[0]);
        return 2;
    }
    OTRL_INIT;
    ACCOUNT = argv[1];
    snprintf(keyfile, sizeof keyfile, "%s/otr.private_key", argv[2]);
    snprintf(instagfile, sizeof instagfile, "%s/otr.instance_tags", argv[2]);
    MMS = atoi(argv[3]);
    if (strcmp(argv[4], "v23") == 0) POLICY |= OTRL_POLICY_ALLOW_V2;
    us = otrl_userstate_create();
    otrl_privkey_read(us, keyfile);
    otrl_instag_read(us, instagfile);
    if (!otrl_privkey_find(us, ACCOUNT, PROTO)) otrl_privkey_generate(us, keyfile, ACCOUNT, PROTO);
    if (!otrl_instag_find(us, ACCOUNT, PROTO)) otrl_instag_generate(us, instagfile, ACCOUNT, PROTO);
    char fp[OTRL_PRIVKEY_FPRINT_HUMAN_LEN];
    otrl_privkey_fingerprint(us, fp, ACCOUNT, PROTO);
    printf("fp %s\n", fp);
    fflush(stdout);

    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        char cmd[16], who[1024], hex[1 << 20];
        hex[0] = 0;
        line[strcspn(line, "\n")] = 0;
        if (sscanf(line, "%15s %1023s %1048575s", cmd, who, hex) < 1) continue;
        if (strcmp(cmd, "quit") == 0) break;
        char *msg = from_hex(hex);
        if (strcmp(cmd, "recv") == 0) {
            char *newmsg = NULL;
            OtrlTLV *tlvs = NULL;
            ConnContext *ctx = NULL;
            int ignore = otrl_message_receiving(us, &ops, NULL, ACCOUNT, PROTO, who, msg, &newmsg, &tlvs, &ctx, NULL, NULL);
            if (tlvs) {
                if (otrl_tlv_find(tlvs, OTRL_TLV_DISCONNECTED)) printf("finished %s\n", who);
                otrl_tlv_free(tlvs);
            }
            if (!ignore) {
                printf("message %s %d ", who, (newmsg && ctx && ctx->msgstate == OTRL_MSGSTATE_ENCRYPTED) ? 1 : 0);
                put_hex(newmsg ? newmsg : msg);
                printf("\n");
            }
            fflush(stdout);
            if (newmsg) otrl_message_free(newmsg);
        } else if (strcmp(cmd, "send") == 0) {
            char *newmsg = NULL;
            gcry_error_t err = otrl_message_sending(us, &ops, NULL, ACCOUNT, PROTO, who, OTRL_INSTAG_BEST, msg, NULL, &newmsg, OTRL_FRAGMENT_SEND_ALL_BUT_LAST, NULL, NULL, NULL);
            if (err) printf("send_error %s %d\n", who, (int)err);
            else {
                printf("inject %s ", who);
                put_hex(newmsg ? newmsg : msg);
                printf("\n");
            }
            fflush(stdout);
            if (newmsg) otrl_message_free(newmsg);
        }
        free(msg);
    }
    free(line);
    return 0;
}
