//go:build wasip1

// chat in Go: a chat room on core ABI version 2's messaging and state, through the sandport
// package. Every connection joins the room `lobby`; a line is sent to everyone else in it as
// "NICK: line". Commands:
//
//	/nick NAME      take a nickname (unique: a compare-and-swap on the key nick:NAME)
//	/who            who is in the lobby
//	/nicks          every nickname taken (listing the bucket's keys)
//	/msg NAME TEXT  send TEXT to NAME only
//	/kick NAME      close NAME's connection
//	/leave          leave the lobby (lines are no longer received nor sent)
//
// Nothing lives in the instance, so it works under every isolation mode: rooms are the host's,
// and nicknames are keys of the plugin's own bucket (nick:NAME -> connection id, and
// conn:ID -> NAME), removed when the connection closes.
package main

import (
	"sort"
	"strconv"
	"strings"

	"sandport.example/goplugins/sandport"
)

const room = "lobby"

var store sandport.Bucket // the plugin's own bucket

func init() {
	sandport.Handle(sandport.Handler{
		OnConnect:    onConnect,
		OnMessage:    onMessage,
		OnDisconnect: onDisconnect,
	})
}

func id(conn uint64) string { return strconv.FormatUint(conn, 10) }

func reply(text string) (sandport.Response, error) { return sandport.Reply([]byte(text)), nil }

// name is a connection's nickname, or "conn ID" without one.
func name(conn uint64) string {
	if nick, ok, _ := store.Get("conn:" + id(conn)); ok {
		return string(nick)
	}
	return "conn " + id(conn)
}

// lookup is the connection that has the nickname.
func lookup(nick string) (uint64, bool) {
	v, ok, _ := store.Get("nick:" + nick)
	if !ok {
		return 0, false
	}
	conn, err := strconv.ParseUint(string(v), 10, 64)
	return conn, err == nil
}

func onConnect(c sandport.Conn) (sandport.Response, error) {
	if err := sandport.Join(c.ID, room); err != nil {
		return sandport.Response{}, err
	}
	return reply("welcome, " + strconv.Itoa(len(sandport.Members(room))) + " in the lobby")
}

func onMessage(conn uint64, message []byte) (sandport.Response, error) {
	line := string(message)
	cmd, arg, _ := strings.Cut(line, " ")
	switch cmd {
	case "/nick":
		if arg == "" || strings.ContainsAny(arg, " :") {
			return reply("usage: /nick NAME")
		}
		taken, err := store.CompareAndSwap("nick:"+arg, nil, []byte(id(conn)))
		if err != nil {
			return sandport.Response{}, err
		}
		if !taken {
			return reply("nick " + arg + " is taken")
		}
		if old, ok, _ := store.Get("conn:" + id(conn)); ok {
			store.Delete("nick:" + string(old))
		}
		if err := store.Set("conn:"+id(conn), []byte(arg)); err != nil {
			return sandport.Response{}, err
		}
		return reply("you are " + arg)
	case "/who":
		var names []string
		for _, m := range sandport.Members(room) {
			names = append(names, name(m))
		}
		return reply("in the lobby: " + strings.Join(names, ", "))
	case "/nicks":
		var nicks []string
		for cursor := ""; ; {
			keys, next, err := store.ListKeys(cursor)
			if err != nil {
				return sandport.Response{}, err
			}
			for _, k := range keys {
				if nick, ok := strings.CutPrefix(k, "nick:"); ok {
					nicks = append(nicks, nick)
				}
			}
			if next == "" {
				break
			}
			cursor = next
		}
		sort.Strings(nicks)
		return reply("nicks: " + strings.Join(nicks, " "))
	case "/msg":
		to, text, _ := strings.Cut(arg, " ")
		target, ok := lookup(to)
		if !ok || sandport.Send(target, []byte(name(conn)+" whispers: "+text)) != nil {
			return reply("no such nick: " + to)
		}
		return reply("sent")
	case "/kick":
		target, ok := lookup(arg)
		if !ok || sandport.Close(target) != nil {
			return reply("no such nick: " + arg)
		}
		return reply("kicked " + arg)
	case "/leave":
		if sandport.Leave(conn, room) {
			return reply("left")
		}
		return reply("not in the lobby")
	}
	sandport.Publish(conn, room, []byte(name(conn)+": "+line), false)
	return sandport.NoReply(), nil
}

func onDisconnect(conn uint64) {
	if nick, ok, _ := store.Get("conn:" + id(conn)); ok {
		store.Delete("nick:" + string(nick))
		store.Delete("conn:" + id(conn))
	}
}

// main is never called: the host calls _initialize (which runs init above), then the hooks.
func main() {}
