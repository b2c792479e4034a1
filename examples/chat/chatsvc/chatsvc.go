// Package chatsvc is the example ChatService: the three streaming call
// shapes.
package chatsvc

import (
	"fmt"
	"io"

	"github.com/lodestar-rpc/lodestar/examples/proto/chatpb"
)

// Service implements chatpb.ChatServiceServer.
type Service struct {
	chatpb.UnimplementedChatServiceServer
	name func() string
}

// New returns a chat service whose messages name the instance name()
// returns.
func New(name func() string) *Service { return &Service{name: name} }

// SendMessage answers every message as it comes.
func (c *Service) SendMessage(st chatpb.ChatService_SendMessageServer) error {
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		reply := &chatpb.Message{Room: m.Room, From: c.name(), Text: "got: " + m.Text}
		if err := st.Send(reply); err != nil {
			return err
		}
	}
}

// Subscribe sends count messages of the room.
func (c *Service) Subscribe(r *chatpb.SubscribeRequest, st chatpb.ChatService_SubscribeServer) error {
	for i := range r.Count {
		if err := st.Send(&chatpb.Message{Room: r.Room, From: c.name(), Text: fmt.Sprintf("news #%d", i+1)}); err != nil {
			return err
		}
	}
	return nil
}

// Upload counts the messages it is sent.
func (c *Service) Upload(st chatpb.ChatService_UploadServer) error {
	n := int32(0)
	for {
		_, err := st.Recv()
		if err == io.EOF {
			return st.SendAndClose(&chatpb.UploadSummary{Messages: n, ServedBy: c.name()})
		}
		if err != nil {
			return err
		}
		n++
	}
}
