/* The HTTP judge's answers to refused requests, one list for the two places
 * that send them: the verdict, which turns the refused skb into its answer
 * at once, and the tc program on the pod's veth, which sends an answer the
 * verdict had to hold back until the server's answers to the requests
 * before it were out (SMIK_CT_F_ANSWER). X(code, reason phrase), in the
 * order the verdict's index (h) and smik_ct_answer.answer use. */
#ifndef SMIK_HTTP_ANSWERS_BPF_H
#define SMIK_HTTP_ANSWERS_BPF_H

#define SMIK_HTTP_ANSWERS(X)                                              \
  X("400", "Bad Request") X("403", "Forbidden") X("414", "URI Too Long") \
  X("431", "Request Header Fields Too Large") X("503", "Service Unavailable")
#define SMIK_HTTP_ANSWER_COUNT 5

#endif /* SMIK_HTTP_ANSWERS_BPF_H */
