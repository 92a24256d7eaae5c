using Broker.Server.Hosting;
using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Server.Core;

/// <summary>
/// How a publish or subscribe finds the topic it names (gRPC; the SQS API asks for <see cref="GetExistingAsync"/>, as
/// its queues are made by CreateQueue). With <see cref="BrokerOptions.AutoCreateTopics"/>
/// (the default) a topic that does not exist is created first, durably, as <c>Admin.CreateTopic</c> would; without it,
/// the call fails with TopicNotFound (1001). An invalid name is refused (InvalidName, 1002) either way. Creation is the
/// store's idempotent create, so concurrent first uses of one name create it once. Only a topic's first use pays for
/// the not-found exception; after that the store answers from its table.
/// </summary>
internal sealed class TopicResolver(TopicStore store, BrokerOptions options)
{
    public ValueTask<Topic> GetTopicAsync(string name, CancellationToken cancellationToken)
    {
        if (!options.AutoCreateTopics)
            return store.GetTopicAsync(name, cancellationToken);
        try
        {
            return store.GetTopicAsync(name, cancellationToken);
        }
        catch (BrokerException error) when (error.Code == BrokerErrorCode.TopicNotFound)
        {
            return CreateThenGetAsync(name, cancellationToken);
        }
    }

    /// <summary>The topic, only if it exists (TopicNotFound, 1001, otherwise) whatever <see cref="BrokerOptions.AutoCreateTopics"/> says.</summary>
    public ValueTask<Topic> GetExistingAsync(string name, CancellationToken cancellationToken) => store.GetTopicAsync(name, cancellationToken);

    private async ValueTask<Topic> CreateThenGetAsync(string name, CancellationToken cancellationToken)
    {
        await store.CreateTopicAsync(name, ifNotExists: true, cancellationToken).ConfigureAwait(false);
        return await store.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
    }
}
