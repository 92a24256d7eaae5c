using Broker.Server.Hosting;
using Broker.Server.Security;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Server.Core;

/// <summary>
/// The redrive use case, one for every front end (gRPC Admin.Redrive, the web view's button, SQS
/// StartMessageMoveTask): who may move dead letters, and how long a move may run.
/// </summary>
internal sealed class DeadLetters(TopicStore store, ShutdownDrain drain)
{
    /// <summary>
    /// Moves up to <paramref name="maxMessages"/> (0: all) dead letters of <paramref name="deadLetterTopic"/> back to the
    /// topics they came from, or to <paramref name="targetTopic"/>. Administering the dead-letter topic is enough to send
    /// its letters home (the broker's own routing, named in headers no producer can write); a named target is a publish
    /// to it, and so is the home of a letter from before those headers were reserved (anyone who may publish to the
    /// dead-letter topic can forge one), which is skipped unless the caller may publish there. The drain stops a long
    /// move: each letter moved so far is moved durably, the rest stay put.
    /// </summary>
    public async Task<RedriveResult> RedriveAsync(Caller caller, string deadLetterTopic, int maxMessages, string? targetTopic,
        CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, deadLetterTopic);
        if (targetTopic is { Length: > 0 })
            caller.Demand(Permission.Publish, targetTopic);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, drain.Draining);
        return await DeadLetterRedrive.RedriveAsync(store, deadLetterTopic, maxMessages, stop.Token, targetTopic is { Length: > 0 } ? targetTopic : null,
                mayTakeUnvouched: home => caller.Can(Permission.Publish, home))
            .ConfigureAwait(false);
    }
}
