//! The agent client against a device agent played in-process (a thread reading the GPU
//! stage's requests off the real ipc channel and answering into its inbox): answers in
//! request order, replies of an earlier incarnation ignored, only the unanswered
//! requests sent again to a restarted agent, items arriving meanwhile kept.

// Test code: a failed step fails the test (clippy.toml allows this in `#[test]`s only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::*;
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use protocol::codec;
use protocol::messages::{
    AgentError, AgentReply, AgentRequest, Command, Inbox, InboxSender, TensorRef,
};
use protocol::shm::ShmRef;
use stage::{AgentClient, AgentResult};
use std::thread::JoinHandle;
use std::time::Duration;

/// The agent's output index in the stage: after its one consumer.
const AGENT_OUTPUT: u32 = 1;

/// A request whose input tensor's shape is `[marker]`: the fake agent echoes it.
fn request(marker: u32) -> AgentRequest {
    let shm = ShmRef {
        pool: OWN_POOL,
        slot: 0,
        generation: 1,
        offset: 0,
        len: 64,
    };
    AgentRequest {
        id: 0,
        stage: "under-test#0".into(),
        reply_to: REPLY_TO,
        model: "toy".into(),
        inputs: vec![TensorRef {
            shm,
            shape: vec![marker],
        }],
        output: shm,
        deadline_ns: 0,
        guaranteed: true,
    }
}

/// The next request on the agent's channel (a test that waits 10 s for one fails).
fn next_request(requests: &IpcReceiver<Vec<u8>>) -> AgentRequest {
    let bytes = requests
        .try_recv_timeout(Duration::from_secs(10))
        .expect("the stage sends a request");
    match codec::decode::<Inbox>("request", &bytes).unwrap() {
        Inbox::AgentRequest(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

/// What the fake agent answers: the request's marker as the output's shape.
fn echo(req: &AgentRequest) -> AgentResult {
    Ok(vec![TensorRef {
        shm: req.output,
        shape: req.inputs[0].shape.clone(),
    }])
}

fn reply(inbox: &InboxSender, id: u64, result: AgentResult) {
    let msg = Inbox::AgentReply(AgentReply { id, result });
    inbox.send(codec::encode("reply", &msg).unwrap()).unwrap();
}

/// The marker each answer carries (`None` for an error).
fn markers(results: &[AgentResult]) -> Vec<Option<u32>> {
    results
        .iter()
        .map(|r| r.as_ref().ok().map(|outs| outs[0].shape[0]))
        .collect()
}

/// An agent that reads `n` requests and answers them last first; it returns their ids.
fn agent_answering_last_first(
    requests: IpcReceiver<Vec<u8>>,
    inbox: InboxSender,
    n: usize,
) -> JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let got: Vec<AgentRequest> = (0..n).map(|_| next_request(&requests)).collect();
        for req in got.iter().rev() {
            reply(&inbox, req.id, echo(req));
        }
        got.iter().map(|r| r.id).collect()
    })
}

#[test]
fn answers_given_out_of_order_come_back_in_request_order() {
    let (mut h, agent) = start_gpu_stage(0);
    let inbox = h.inbox.clone();
    let fake = std::thread::spawn(move || {
        let got: Vec<AgentRequest> = (0..3).map(|_| next_request(&agent.requests)).collect();
        let failed = AgentError::Failed("toy failed".into());
        reply(&inbox, got[2].id, echo(&got[2]));
        reply(&inbox, got[0].id, echo(&got[0]));
        reply(&inbox, got[1].id, Err(failed));
        got
    });
    let mut client = AgentClient::new(&h.node.setup).unwrap();
    let results = client
        .call_all(&mut h.node, vec![request(10), request(20), request(30)])
        .unwrap();
    let seen = fake.join().unwrap();
    assert_eq!(markers(&results), vec![Some(10), None, Some(30)]);
    assert_eq!(results[1], Err(AgentError::Failed("toy failed".into())));
    assert_eq!(
        seen.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "a first process numbers its requests from 1"
    );
    assert!(seen.iter().all(|r| r.reply_to == REPLY_TO));
    assert!(client.take_arrived().items.is_empty());
}

#[test]
fn a_reply_to_a_request_of_an_earlier_incarnation_is_ignored() {
    let (mut h, agent) = start_gpu_stage(2);
    // The agent answers request 1 of this replica's first process, killed since: the
    // reply lands in the restarted process's inbox before its own.
    reply(&h.inbox, 1, Ok(Vec::new()));
    let fake = agent_answering_last_first(agent.requests, h.inbox.clone(), 1);
    let mut client = AgentClient::new(&h.node.setup).unwrap();
    let results = client.call_all(&mut h.node, vec![request(10)]).unwrap();
    let ids = fake.join().unwrap();
    assert_eq!(
        markers(&results),
        vec![Some(10)],
        "its own answer, not the stale one"
    );
    assert_eq!(ids, vec![(2u64 << 40) + 1], "ids of incarnation 2");
}

/// The supervisor's rewire of the stage's agent output to a restarted agent: the new
/// inbox sender on the rewire channel, then the command. Returns the new agent's end.
fn restart_agent(rewire: &IpcSender<InboxSender>, inbox: &InboxSender) -> IpcReceiver<Vec<u8>> {
    let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
    rewire.send(tx).unwrap();
    let cmd = Inbox::Command(Command::Rewire {
        output: AGENT_OUTPUT,
    });
    inbox.send(codec::encode("rewire", &cmd).unwrap()).unwrap();
    rx
}

#[test]
fn a_restarted_agent_gets_the_unanswered_requests_again_and_only_those() {
    let (mut h, agent) = start_gpu_stage(0);
    let inbox = h.inbox.clone();
    let fake = std::thread::spawn(move || {
        let first: Vec<AgentRequest> = (0..3).map(|_| next_request(&agent.requests)).collect();
        // Answers the second request, then dies with the others queued.
        reply(&inbox, first[1].id, echo(&first[1]));
        let restarted = restart_agent(&agent.rewire, &inbox);
        // Answers what it gets until the two unanswered requests are among it.
        let mut again: Vec<AgentRequest> = Vec::new();
        while ![first[0].id, first[2].id]
            .iter()
            .all(|id| again.iter().any(|r| r.id == *id))
        {
            let req = next_request(&restarted);
            reply(&inbox, req.id, echo(&req));
            again.push(req);
        }
        (again.iter().map(|r| r.id).collect::<Vec<_>>(), restarted)
    });
    let mut client = AgentClient::new(&h.node.setup).unwrap();
    let results = client
        .call_all(&mut h.node, vec![request(10), request(20), request(30)])
        .unwrap();
    let (again, restarted) = fake.join().unwrap();
    assert_eq!(markers(&results), vec![Some(10), Some(20), Some(30)]);
    assert_eq!(again, vec![1, 3], "the unanswered ones, under their ids");
    assert!(
        restarted.try_recv().is_err(),
        "the answered request is not sent again"
    );
}

#[test]
fn items_that_arrive_while_waiting_are_kept_for_the_stage() {
    let (mut h, agent) = start_gpu_stage(0);
    // Queued before the agent can answer: read while the client waits.
    h.send_frame(0);
    h.send_frame(1);
    h.end(2);
    let fake = agent_answering_last_first(agent.requests, h.inbox.clone(), 1);
    let mut client = AgentClient::new(&h.node.setup).unwrap();
    let results = client.call_all(&mut h.node, vec![request(10)]).unwrap();
    fake.join().unwrap();
    assert_eq!(markers(&results), vec![Some(10)]);
    let arrived = client.take_arrived();
    let seqs: Vec<u64> = arrived.items.iter().map(|i| i.seq()).collect();
    assert_eq!(seqs, vec![0, 1], "every item, in arrival order");
    assert!(arrived.ended, "the end of stream is kept too");
    assert_eq!(
        h.up_pool.holds_of(NODE_HOLDER),
        2,
        "the kept items still hold their slots"
    );
    drop(arrived);
    assert_eq!(h.up_pool.holds_of(NODE_HOLDER), 0);
    let again = client.take_arrived();
    assert!(again.items.is_empty() && !again.ended, "handed over once");
}
