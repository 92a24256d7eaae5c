using System.Text.Json.Nodes;
using Broker.Server.Security;
using Broker.Storage.Errors;

namespace Broker.Server.Sqs;

/// <summary>SQS queue tags: kept as properties of the queue's topic (<see cref="SqsQueueSettings"/>), durable when answered.</summary>
internal sealed partial class SqsActions
{
    // SQS's limits on tags.
    private const int MaxTags = 50;
    private const int MaxTagKeyLength = 128;
    private const int MaxTagValueLength = 256;

    /// <summary>Adds or replaces tags; checked by <see cref="Core.TopicAdmin"/> (admin on the queue's topic).</summary>
    private Task<JsonObject> TagQueueAsync(SqsInput input, Caller caller, CancellationToken cancellationToken)
    {
        var requested = input.Map("Tags");
        if (requested.Count == 0)
            throw SqsException.MissingParameter("Tags");
        return ChangeTagsAsync(QueueName(input), caller, existing => CheckedTags(requested, existing)
            .ToDictionary(tag => SqsQueueSettings.TagProperty(tag.Key), tag => (string?)tag.Value), cancellationToken);
    }

    /// <summary>Removes tags by key; a key the queue does not have is no error, as in SQS.</summary>
    private Task<JsonObject> UntagQueueAsync(SqsInput input, Caller caller, CancellationToken cancellationToken)
    {
        var keys = input.Strings("TagKeys");
        if (keys.Count == 0)
            throw SqsException.MissingParameter("TagKeys");
        return ChangeTagsAsync(QueueName(input), caller, _ => keys.Distinct(StringComparer.Ordinal)
            .ToDictionary(key => SqsQueueSettings.TagProperty(key), _ => (string?)null), cancellationToken);
    }

    /// <summary>
    /// The property changes <paramref name="changes"/> makes of the queue's current tags, applied durably; made under
    /// the store's lock, so two TagQueue calls at once cannot together pass the limit of 50.
    /// </summary>
    private async Task<JsonObject> ChangeTagsAsync(string name, Caller caller,
        Func<IReadOnlyDictionary<string, string>, IReadOnlyDictionary<string, string?>> changes, CancellationToken cancellationToken)
    {
        try
        {
            await admin.UpdatePropertiesAsync(caller, name, properties => changes(SqsQueueSettings.TagsOf(properties)), cancellationToken)
                .ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        return [];
    }

    private JsonObject ListQueueTags(SqsInput input)
    {
        string name = QueueName(input);
        IReadOnlyDictionary<string, string> tags;
        try
        {
            tags = SqsQueueSettings.TagsOf(queues.Store.PropertiesOf(name));
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        if (tags.Count == 0)
            return [];
        var map = new JsonObject();
        foreach (var (key, value) in tags.OrderBy(tag => tag.Key, StringComparer.Ordinal))
            map[key] = value;
        return new JsonObject { ["Tags"] = map };
    }

    /// <summary>
    /// The tags of a request, checked as SQS checks them: keys of 1 to 128 characters (not starting "aws:", which AWS
    /// keeps for itself), values of at most 256, and at most 50 on the queue once they are added to <paramref name="existing"/>.
    /// </summary>
    private static IReadOnlyDictionary<string, string> CheckedTags(IReadOnlyDictionary<string, string> requested, IReadOnlyDictionary<string, string> existing)
    {
        foreach (var (key, value) in requested)
        {
            if (key.Length is 0 or > MaxTagKeyLength || !SqsText.IsValid(key))
                throw SqsException.InvalidParameter($"A tag key has 1 to {MaxTagKeyLength} characters; '{key}' does not fit.");
            if (key.StartsWith("aws:", StringComparison.OrdinalIgnoreCase))
                throw SqsException.InvalidParameter($"The tag key '{key}' uses the reserved prefix aws:.");
            if (value.Length > MaxTagValueLength || !SqsText.IsValid(value))
                throw SqsException.InvalidParameter($"The value of tag '{key}' has more than {MaxTagValueLength} characters or characters outside the allowed set.");
        }
        int total = existing.Keys.Union(requested.Keys, StringComparer.Ordinal).Count();
        if (total > MaxTags)
            throw SqsException.InvalidParameter($"Too many tags: the queue would have {total}; at most {MaxTags} are allowed.");
        return requested;
    }
}
