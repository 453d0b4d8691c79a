/* Intrusive doubly linked lists over any struct with `prev` and `next`
 * pointers to its own type, as BSD's sys/queue.h and libuv's queue.h do
 * it: the links live in the object, so adding and removing allocate
 * nothing and removing is O(1) from the object alone. Two shapes:
 * a list (head and tail: first in, first out) and a set (a head alone:
 * order does not matter). head and tail are lvalues; n is evaluated more
 * than once. */
#ifndef LOOM_LIST_H
#define LOOM_LIST_H

#define LOOM_LIST_APPEND(head, tail, n) \
  do {                                  \
    (n)->next = NULL;                   \
    (n)->prev = (tail);                 \
    if (tail)                           \
      (tail)->next = (n);               \
    else                                \
      (head) = (n);                     \
    (tail) = (n);                       \
  } while (0)

#define LOOM_LIST_PREPEND(head, tail, n) \
  do {                                   \
    (n)->prev = NULL;                    \
    (n)->next = (head);                  \
    if (head)                            \
      (head)->prev = (n);                \
    else                                 \
      (tail) = (n);                      \
    (head) = (n);                        \
  } while (0)

#define LOOM_LIST_UNLINK(head, tail, n) \
  do {                                  \
    if ((n)->prev)                      \
      (n)->prev->next = (n)->next;      \
    else                                \
      (head) = (n)->next;               \
    if ((n)->next)                      \
      (n)->next->prev = (n)->prev;      \
    else                                \
      (tail) = (n)->prev;               \
    (n)->next = (n)->prev = NULL;       \
  } while (0)

#define LOOM_SET_ADD(head, n) \
  do {                        \
    (n)->prev = NULL;         \
    (n)->next = (head);       \
    if (head)                 \
      (head)->prev = (n);     \
    (head) = (n);             \
  } while (0)

#define LOOM_SET_REMOVE(head, n)   \
  do {                             \
    if ((n)->prev)                 \
      (n)->prev->next = (n)->next; \
    else                           \
      (head) = (n)->next;          \
    if ((n)->next)                 \
      (n)->next->prev = (n)->prev; \
    (n)->next = (n)->prev = NULL;  \
  } while (0)

#endif
