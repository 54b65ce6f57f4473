//! The agent's typed errors cross the wire as themselves: a GPU stage acts on
//! `OutputSlotTooSmall` by its variant (it halves its batch), never by reading the text.

use protocol::codec;
use protocol::messages::{AgentError, AgentReply, Inbox};

#[test]
fn an_agent_reply_keeps_its_typed_error_across_the_wire() {
    let too_small = AgentError::OutputSlotTooSmall {
        model: "isnet".into(),
        stage: "net#0".into(),
        need: 4096,
        have: 1024,
    };
    let reply = Inbox::AgentReply(AgentReply {
        id: 7,
        result: Err(too_small.clone()),
    });
    let bytes = codec::encode("agent reply", &reply).expect("encodes");
    let back: Inbox = codec::decode("agent reply", &bytes).expect("decodes");
    assert_eq!(back, reply);
    assert_eq!(
        too_small.to_string(),
        "output slot too small: the outputs of isnet need 4096 bytes, the output slot of net#0 has 1024"
    );
    let other: AgentError = "model 'x' is not hosted by this agent".into();
    assert!(matches!(other, AgentError::Failed(ref m) if m.contains("not hosted")));
}
